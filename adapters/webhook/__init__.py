"""Signed webhooks (Standard Webhooks HMAC-SHA256) translated with a declarative mapping."""

from adapters.webhook.adapter import WebhookAdapter, sign, signing_key

__all__ = ["WebhookAdapter", "sign", "signing_key"]
