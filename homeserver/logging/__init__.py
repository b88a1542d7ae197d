"""Structured logging: request ids in contextvars, secret redaction, text or JSON-lines output."""

from homeserver.logging.context import RequestIdFilter, request_context, request_id
from homeserver.logging.setup import (
    JsonFormatter,
    RedactingFilter,
    TextFormatter,
    redact_secrets,
    setup_logging,
)

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "RequestIdFilter",
    "TextFormatter",
    "redact_secrets",
    "request_context",
    "request_id",
    "setup_logging",
]
