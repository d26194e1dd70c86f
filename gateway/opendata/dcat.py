"""The DCAT-AP description of an open-data export: ``catalog.jsonld``, one dcat:Dataset per entity type.

DCAT-AP 3.0 (compatible with 2.x readers): a dcat:Catalog (dct:title, dct:description,
dct:publisher, dct:license, dct:modified, dcat:dataset), each dcat:Dataset with dct:title,
dct:description, dct:identifier, dct:publisher, dct:spatial (a dct:Location with dcat:bbox as a
GeoSPARQL WKT literal and the communes' names), dct:temporal (dct:PeriodOfTime with dcat:startDate
and dcat:endDate), dct:modified, dct:conformsTo (the entity type's Smart Data Model IRI),
dct:accessRights PUBLIC, dcat:contactPoint (a vcard:Organization), and one dcat:Distribution per
format with dcat:accessURL, dcat:downloadURL, dct:format and dcat:mediaType (EU and IANA vocabularies), dct:license,
dcat:byteSize and an spdx:checksum (SHA-256).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from gateway.store.sharing import Policies

if TYPE_CHECKING:
    from gateway.opendata.export import Licence, OpenDataSettings, Report, TypeSummary

CONTEXT: Final = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "locn": "http://www.w3.org/ns/locn#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "spdx": "http://spdx.org/rdf/terms#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "gsp": "http://www.opengis.net/ont/geosparql#",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
}
FORMATS: Final = {
    "geojson": ("http://publications.europa.eu/resource/authority/file-type/GEOJSON",
                "https://www.iana.org/assignments/media-types/application/geo+json", "GeoJSON"),
    "csv": ("http://publications.europa.eu/resource/authority/file-type/CSV",
            "https://www.iana.org/assignments/media-types/text/csv", "CSV"),
}
PUBLIC_ACCESS: Final = "http://publications.europa.eu/resource/authority/access-right/PUBLIC"


def _date_time(value: str) -> dict[str, str]:
    return {"@value": value, "@type": "xsd:dateTime"}


def _licence(licence: Licence) -> dict[str, Any]:
    doc: dict[str, Any] = {"@id": licence.iri, "@type": "dct:LicenseDocument", "dct:title": licence.title,
                           "dct:identifier": licence.spdx, "dct:type": [{"@id": k} for k in licence.kinds]}
    if licence.eu_nal:
        doc["skos:exactMatch"] = {"@id": licence.eu_nal}
    return doc


def _wkt(bbox: list[float]) -> str:
    x0, y0, x1, y1 = bbox
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def _url(settings: OpenDataSettings, name: str) -> str:
    return f"{settings.base_url.rstrip('/')}/{name}" if settings.base_url else name


def _contact(settings: OpenDataSettings) -> dict[str, Any]:
    """The publisher as a vCard organisation, with the contact address when one is configured."""
    card: dict[str, Any] = {"@type": "vcard:Organization", "vcard:fn": settings.publisher}
    if settings.contact:
        target = settings.contact if ":" in settings.contact else f"mailto:{settings.contact}"
        card["vcard:hasEmail" if target.startswith("mailto:") else "vcard:hasURL"] = {"@id": target}
    return card


def _dataset(summary: TypeSummary, report: Report, policies: Policies, settings: OpenDataSettings,
             licence: Licence, publisher: dict[str, Any]) -> dict[str, Any]:
    communes = sorted(policies.label(t) for t in summary.tenants)
    ident = f"{summary.name}"
    dataset: dict[str, Any] = {
        "@id": _url(settings, f"catalog.jsonld#{ident}"),
        "@type": "dcat:Dataset",
        "dct:identifier": ident,
        "dct:title": f"{settings.title}: {summary.name}",
        "dct:description": (f"{summary.count} {summary.name} entities shared with the public by "
                            f"{', '.join(communes)}, as NGSI-LD (Smart Data Models) attributes flattened to "
                            f"GeoJSON and CSV."),
        "dct:publisher": publisher,
        "dct:conformsTo": {"@id": summary.iri},
        "dct:accessRights": {"@id": PUBLIC_ACCESS},
        "dct:issued": _date_time(report.generated),
        "dct:modified": _date_time(summary.modified or report.generated),
        "dcat:keyword": [summary.name, *communes],
        "dcat:contactPoint": _contact(settings),
        "dcat:distribution": [],
    }
    spatial: dict[str, Any] = {"@type": "dct:Location", "locn:geographicName": communes}
    if summary.bbox is not None:
        spatial["dcat:bbox"] = {"@value": _wkt(summary.bbox), "@type": "gsp:wktLiteral"}
    dataset["dct:spatial"] = spatial
    if summary.first and summary.last:
        dataset["dct:temporal"] = {"@type": "dct:PeriodOfTime", "dcat:startDate": _date_time(summary.first),
                                   "dcat:endDate": _date_time(summary.last)}
    for fmt, (name, size, sha256) in summary.files.items():
        file_type, media_type, label = FORMATS[fmt]
        url = _url(settings, name)
        dataset["dcat:distribution"].append({
            "@id": url + "#distribution",
            "@type": "dcat:Distribution",
            "dct:title": f"{summary.name} ({label})",
            "dcat:accessURL": {"@id": url},
            "dcat:downloadURL": {"@id": url},
            "dct:format": {"@id": file_type},
            "dcat:mediaType": {"@id": media_type},
            "dct:license": {"@id": licence.iri},
            "dct:modified": _date_time(report.generated),
            "dcat:byteSize": {"@value": str(size), "@type": "xsd:nonNegativeInteger"},
            "spdx:checksum": {"@type": "spdx:Checksum", "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
                              "spdx:checksumValue": {"@value": sha256, "@type": "xsd:hexBinary"}},
        })
    return dataset


def catalogue(report: Report, policies: Policies, settings: OpenDataSettings, licence: Licence) -> dict[str, Any]:
    """The DCAT-AP catalogue (JSON-LD) of an export."""
    publisher = {"@type": "foaf:Agent", "foaf:name": settings.publisher}
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@id": _url(settings, "catalog.jsonld"),
        "@type": "dcat:Catalog",
        "dct:title": settings.title,
        "dct:description": (f"Data that {settings.publisher}'s communes share with the public, exported by "
                            "jonction from its NGSI-LD store."),
        "dct:publisher": publisher,
        "dct:license": _licence(licence),
        "dct:modified": _date_time(report.generated),
        "dcat:dataset": [_dataset(s, report, policies, settings, licence, publisher) for s in report.types.values()],
    }
    return doc
