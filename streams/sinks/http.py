"""What the HTTP outputs (webhook, splunk_hec, elastic, ocsf) share: one
``httpx.AsyncClient`` per output with its TLS options, timeout and
connection cap, and one reading of HTTP status codes into outcomes.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
import urllib.parse
from typing import Annotated, Any, Mapping, Optional, Sequence, Union

from pydantic import AfterValidator

from mcpsift import __version__

from .outputs import Outcome, Output, config_error, error_text

__all__ = [
    "HeaderMap",
    "HttpOutput",
    "HttpUrl",
    "JsonPostOutput",
    "USER_AGENT",
    "outcome_of_status",
    "redact_url",
    "retry_after_s",
]

USER_AGENT = f"mcpsift/{__version__}"
#: the headers a JSON-posting output sets itself (``headers`` may not override them)
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 header field name
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


def redact_url(url: str) -> str:
    """``url`` without user info, query and fragment (for status output and errors)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"



#: status codes that mean "slow down": the whole output pauses
THROTTLE_STATUSES = frozenset({429, 502, 503, 504})


def retry_after_s(headers: Mapping[str, str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), capped at a day."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), 86_400.0)


def outcome_of_status(status: int, headers: Mapping[str, str], body: str = "") -> Outcome:
    """2xx delivered; 410 disables the output; 429/502/503/504 throttle; anything else retries."""
    if 200 <= status < 300:
        return Outcome.ok()
    detail = f"HTTP {status}"
    if body:
        detail += f": {body.strip()[:200]}"
    if status == 410:
        return Outcome("disable", detail)
    if status in THROTTLE_STATUSES:
        return Outcome("retry", detail, retry_after_s=retry_after_s(headers), throttle=True)
    return Outcome("retry", detail)


class HttpOutput(Output):
    """An output that POSTs; subclasses implement :meth:`send` with :meth:`post`."""

    def __init__(self, config: Any):
        super().__init__(config)
        self._client: Any = None

    async def open(self) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(f"the {self.type} output needs httpx: pip install 'mcpsift[all]'") from None
        cfg = self.config
        self._client = httpx.AsyncClient(
            verify=cfg.tls.context(),
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency),
            follow_redirects=False,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def post(
        self, url: str, content: Union[bytes, str], headers: Mapping[str, str]
    ) -> Union[Any, Outcome]:
        """The response, or a ``retry`` outcome when the receiver could not be reached."""
        if self._client is None:
            await self.open()
        try:
            server_name = self.config.tls.server_name
            # sni_hostname: the name sent in SNI and checked against the certificate
            extensions = {"sni_hostname": server_name} if server_name else None
            return await self._client.post(url, content=content, headers=dict(headers), extensions=extensions)
        except Exception as exc:  # connection refused, timeout, TLS failure ...
            return Outcome("retry", error_text(exc))


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
