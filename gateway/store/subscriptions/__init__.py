"""NGSI-LD subscriptions and notifications (ETSI GS CIM 009 V1.9.1 §5.2.12, §5.8, §5.11, §6.10, §6.11).

Modules: ``parsing`` (validation, the Subscription model), ``matching`` (which changes notify),
``rendering`` (notification contents), ``delivery`` (HTTP POST and MQTT publish), ``notifier``
(registry, dispatcher, retries, lifecycle state) and ``handlers`` (the HTTP API). Subscriptions
live in the store's SQLite file (table ``subscriptions``, tenant-scoped) and in memory.
"""

from gateway.store.subscriptions.handlers import setup_subscriptions
from gateway.store.subscriptions.matching import selected, triggered
from gateway.store.subscriptions.notifier import NOTIFIER_KEY, Delivery, Notifier, subscription_context
from gateway.store.subscriptions.parsing import Subscription, build, ensure_schema
from gateway.store.subscriptions.rendering import Change, notification, render_change

__all__ = [
    "NOTIFIER_KEY",
    "Change",
    "Delivery",
    "Notifier",
    "Subscription",
    "build",
    "ensure_schema",
    "notification",
    "render_change",
    "selected",
    "setup_subscriptions",
    "subscription_context",
    "triggered",
]
