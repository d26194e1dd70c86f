"""The adapter kit: transports, parsers and libraries that adapters share.

Adapters (one folder each under ``adapters/``) import from here; nothing here imports a
concrete adapter. What lives here: MQTT and HTTP push transports, the strict payload parser,
the declarative mapping engine, the LoRaWAN family, the demo's simulated vendor sources, and the
adapter contract suite (``testing``) that any adapter package runs on itself.
"""
