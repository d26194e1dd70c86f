"""Open data: what communes share with ``public``, exported as GeoJSON and CSV with a DCAT-AP catalogue.

:func:`gateway.opendata.export.export_open_data` reads the embedded store (any backend) through
its Storage interface, keeps only what the sharing policy file grants to ``public`` (types,
attributes, coarsened locations), never personal data, and writes one GeoJSON and one CSV file
per entity type plus ``catalog.jsonld`` (DCAT-AP) naming the licence (Licence Ouverte / Etalab
2.0 or ODbL). ``jonction open-data`` runs it on demand; the gateway's ``open_data`` key on a
schedule.
"""
