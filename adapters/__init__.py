"""jonction adapters: one folder per vendor API or protocol, plus shared transports.

Adapter authors import the contract from here.
"""

from gateway.contract import ADAPTER_FILES, Adapter, Emit, Manifest, load_config_schema, register_secret
from gateway.errors import AuthFailed, ConfigInvalid, TranslationError, Unavailable
from gateway.model import Entity, RawMessage

__all__ = [
    "ADAPTER_FILES",
    "Adapter",
    "AuthFailed",
    "ConfigInvalid",
    "Emit",
    "Entity",
    "Manifest",
    "RawMessage",
    "TranslationError",
    "Unavailable",
    "load_config_schema",
    "register_secret",
]
