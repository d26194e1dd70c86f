"""jonction gateway: the runtime, NGSI-LD model, validation, embedded store and CLI."""

__version__ = "0.1.0"
