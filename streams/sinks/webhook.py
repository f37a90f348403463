"""The ``webhook`` output: one signed JSON POST per alert, per the Standard
Webhooks spec (https://www.standardwebhooks.com).

Each request carries ``webhook-id`` (the alert id, so a receiver can drop a
redelivery), ``webhook-timestamp`` (Unix seconds at sending) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``,
one per configured secret, space-separated (to rotate a secret, list the new
one beside the old one until the receiver has switched). The body is
``{"type": "mcpsift.alert", "timestamp": <alert time>, "data": <alert>}``;
the bytes signed are the bytes sent. Nothing is truncated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from pathlib import Path
from typing import Literal, Mapping, Optional, Sequence

import orjson
from pydantic import PrivateAttr, SecretStr, model_validator

from mcpsift.alerts import Alert

from .http import USER_AGENT, HeaderMap, HttpUrl, JsonPostOutput, redact_url
from .outputs import Outcome, OutputConfig, alert_document, config_error, config_secret, register_output

__all__ = [
    "WebhookConfig",
    "WebhookOutput",
    "parse_webhook_secret",
    "sign",
    "webhook_payload",
]

_MIN_KEY_BYTES = 24  # the spec: secrets SHOULD be 24 to 64 random bytes


def parse_webhook_secret(value: str, where: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; errors name ``where``, never the value."""
    value = value.strip()
    if not value.startswith("whsec_"):
        raise config_error(f"{where}: must start with 'whsec_' (a Standard Webhooks secret: whsec_ + base64)")
    encoded = value[len("whsec_") :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise config_error(f"{where}: the part after 'whsec_' is not valid base64") from None
    if len(key) < _MIN_KEY_BYTES:
        raise config_error(
            f"{where}: the key is {len(key)} bytes; use at least {_MIN_KEY_BYTES} random bytes, "
            "e.g. whsec_$(openssl rand -base64 32)"
        )
    return key


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii") for key in keys
    )


def webhook_payload(alert: Alert) -> bytes:
    """The request body for ``alert`` (Standard Webhooks payload structure)."""
    document = alert_document(alert)
    return orjson.dumps({"type": "mcpsift.alert", "timestamp": document["time"], "data": document})


class WebhookConfig(OutputConfig):
    type: Literal["webhook"]
    url: HttpUrl
    #: one secret ``whsec_<base64>`` ...
    secret: Optional[SecretStr] = None
    #: ... or several (rotation): every request is signed with each
    secrets: Optional[list[SecretStr]] = None
    #: ... or a file / an env var holding one or more, whitespace-separated
    secret_file: Optional[Path] = None
    secret_env: Optional[str] = None
    #: extra request headers (not webhook-*, content-type, host)
    headers: HeaderMap = {}

    _keys: list[bytes] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _read_keys(self) -> "WebhookConfig":
        for name in self.headers:
            if name.lower().startswith("webhook-"):
                raise config_error(f"headers: {name!r} is set by the webhook output itself")
        if self.secret is not None and self.secrets is not None:
            raise config_error("give secret or secrets, not both")
        if self.secrets is not None:
            if not self.secrets:
                raise config_error("secrets: the list is empty")
            self._keys = [
                parse_webhook_secret(s.get_secret_value(), f"secrets[{i}]") for i, s in enumerate(self.secrets)
            ]
            if self.secret_file is not None or self.secret_env is not None:
                raise config_error("give one of secret(s), secret_file, secret_env")
            return self
        text = config_secret(self.secret, self.secret_file, self.secret_env, "secret")
        if text is None:
            raise config_error(
                "a webhook needs a signing secret: give secret, secrets, secret_file or secret_env "
                "(whsec_ + base64, shared with the receiver)"
            )
        where = "secret" if self.secret is not None else ("secret_file" if self.secret_file else "secret_env")
        values = text.split()
        if not values:
            raise config_error(f"{where}: is empty")
        self._keys = [
            parse_webhook_secret(v, where if len(values) == 1 else f"{where} (secret {i + 1})")
            for i, v in enumerate(values)
        ]
        return self

    @property
    def signing_keys(self) -> list[bytes]:
        """The HMAC keys (never shown)."""
        return self._keys


@register_output
class WebhookOutput(JsonPostOutput):
    """Standard Webhooks: one signed POST per alert."""

    type = "webhook"
    Config = WebhookConfig

    def __init__(self, config: WebhookConfig):
        super().__init__(config)
        self.config: WebhookConfig = config

    async def send(self, alerts: Sequence[Alert]) -> list[Outcome]:
        return await self.post_each(self.config.url, [(a.alert_id, webhook_payload(a)) for a in alerts])

    def headers_for(self, doc_id: str, body: bytes) -> Mapping[str, str]:
        timestamp = int(time.time())  # receivers reject a timestamp older than a few minutes
        return {
            "user-agent": USER_AGENT,
            **self.config.headers,
            "content-type": "application/json",
            "webhook-id": doc_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.config.signing_keys, doc_id, timestamp, body),
        }

    def describe(self) -> str:
        return f"webhook {redact_url(self.config.url)} ({len(self.config.signing_keys)} signing key(s))"
