"""What the HTTP outputs (webhook, splunk_hec, elastic, ocsf) share: one
``httpx.AsyncClient`` per output with its TLS options, timeout and
connection cap, and one reading of HTTP status codes into outcomes.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, Mapping, Optional, Union

from .outputs import Outcome, Output

__all__ = ["HttpOutput", "outcome_of_status", "retry_after_s"]

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
            return await self._client.post(url, content=content, headers=dict(headers))
        except Exception as exc:  # connection refused, timeout, TLS failure ...
            return Outcome("retry", f"{type(exc).__name__}: {str(exc)[:200] or 'no detail'}")
