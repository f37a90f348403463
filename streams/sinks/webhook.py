"""The ``webhook`` output: one signed JSON POST per alert, per the Standard
Webhooks spec (https://www.standardwebhooks.com).

Each request carries ``webhook-id`` (the alert id, so a receiver can drop a
redelivery), ``webhook-timestamp`` (Unix seconds at sending) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``,
one per configured secret, space-separated (to rotate a secret, list the new
one beside the old one until the receiver has switched). The body is
``{"type": "mcpsift.alert", "timestamp": <alert time>, "data": <alert>}``;
the bytes signed are the bytes sent. Nothing is truncated.

Also here, for every output that POSTs one JSON document per alert (``ocsf``
reuses them): :class:`JsonPostOutput`, the ``url`` and ``headers`` option
types and :func:`config_secret`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Sequence

import orjson
from pydantic import AfterValidator, PrivateAttr, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from mcpsift import __version__
from mcpsift.alerts import Alert

from .http import HttpOutput, outcome_of_status
from .outputs import Outcome, OutputConfig, SecretError, alert_document, read_secret, register_output

__all__ = [
    "HeaderMap",
    "HttpUrl",
    "JsonPostOutput",
    "USER_AGENT",
    "WebhookConfig",
    "WebhookOutput",
    "config_error",
    "config_secret",
    "parse_webhook_secret",
    "redact_url",
    "sign",
    "webhook_payload",
]

USER_AGENT = f"mcpsift/{__version__}"
#: the headers a JSON-posting output sets itself (``headers`` may not override them)
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 header field name
_MIN_KEY_BYTES = 24  # the spec: secrets SHOULD be 24 to 64 random bytes


def config_error(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("output_config", "{detail}", {"detail": message})


def _http_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # the URL itself is not echoed: it may carry credentials or a token
        raise config_error(f"must be an http:// or https:// URL with a host (got scheme {parts.scheme!r})")
    return value


def _header_map(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _TOKEN.match(name):
            raise config_error(f"header name {name!r} is not a valid HTTP header name")
        if name.lower() in RESERVED_HEADERS:
            raise config_error(f"header {name!r} is set by the output itself")
        if any(c in text for c in "\r\n\x00"):
            raise config_error(f"header {name!r}: the value may not contain CR, LF or NUL")
    return {name.lower(): text for name, text in value.items()}  # names are case-insensitive


#: an http(s) URL with a host
HttpUrl = Annotated[str, AfterValidator(_http_url)]
#: extra request headers: valid names (lower-cased), no CR/LF/NUL in values, none the output sets itself
HeaderMap = Annotated[dict[str, str], AfterValidator(_header_map)]


def config_secret(value: Optional[SecretStr], file: Optional[Path], env: Optional[str], what: str) -> Optional[str]:
    """:func:`read_secret` for use in a config validator (its error message shown as is)."""
    try:
        return read_secret(value, file, env, what)
    except SecretError as exc:
        raise config_error(str(exc)) from None


def redact_url(url: str) -> str:
    """``url`` without user info, query and fragment (for status output and errors)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


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


class JsonPostOutput(HttpOutput):
    """An output that POSTs one JSON document per alert, at most ``concurrency``
    requests in flight across all its batches (so no request waits for a
    connection longer than the timeout allows)."""

    def __init__(self, config: Any):
        super().__init__(config)
        self._slots = asyncio.Semaphore(config.concurrency)

    def headers_for(self, doc_id: str, body: bytes) -> Mapping[str, str]:
        """The headers of one request; called just before it is sent (so a
        time in them is the sending time, even late in a long batch)."""
        raise NotImplementedError

    async def post_each(self, url: str, documents: Sequence[tuple[str, bytes]]) -> list[Outcome]:
        """POST every ``(id, body)`` concurrently; their outcomes, in order."""
        return list(await asyncio.gather(*(self._post_one(url, doc_id, body) for doc_id, body in documents)))

    async def _post_one(self, url: str, doc_id: str, body: bytes) -> Outcome:
        async with self._slots:
            response = await self.post(url, body, self.headers_for(doc_id, body))
        if isinstance(response, Outcome):
            return response
        return outcome_of_status(response.status_code, response.headers, response.text)


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
