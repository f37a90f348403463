"""Splunk HTTP Event Collector output (``type: splunk_hec``).

Each batch is one ``POST <url>/services/collector/event`` carrying one HEC
event envelope per alert, newline-separated (HEC reads concatenated JSON
objects)::

    {"time": 1795161601.25, "host": ..., "source": "mcpsift",
     "sourcetype": "mcpsift:alert", "index": ... (only when set),
     "event": <the canonical alert document>,
     "fields": {"rule_id", "severity", "tenant", and "principal_subject",
                "session_id", "server_resource" when set}}

How HEC replies map to outcomes (the JSON ``code`` HEC puts in every reply):

* HTTP 2xx with ``code`` 0: delivered (with ``ack: true``: once acknowledged);
* ``code`` 5 no data, 6 invalid data format, 12/13 event field missing or
  blank, 15 bad indexed fields: ``failed`` (the events themselves are wrong;
  retrying the same bytes cannot succeed). When HEC names the bad event
  (``invalid-event-number``) only that alert fails; the others of the batch
  retry (HEC may have indexed those before it; it does not say, and a
  duplicate is better than a loss);
* everything else reads the HTTP status (:func:`outcome_of_status`): 410
  disables the output; 429 and 503 (``code`` 9 server busy, 18/19 unhealthy)
  retry and pause the output; 401/403 (``code`` 1-4: token missing, disabled
  or invalid), 400 ``code`` 7 (index not allowed for the token), 10/11
  (channel missing or invalid: the token wants ``ack: true``), 500 and the
  rest retry, giving the operator time to fix the token or index;
* a 2xx reply that is not ``{"code": 0, ...}``: retry.

Indexer acknowledgement (``ack: true``, Splunk Enterprise, token with
``useACK``): every request carries ``X-Splunk-Request-Channel: <uuid4 made once
per output>``; the reply holds ``{"ackId": N}``; the output then polls
``POST <url>/services/collector/ack?channel=<uuid>`` with ``{"acks": [N]}``
every ``ack_poll_s`` until HEC answers ``{"acks": {"N": true}}`` (delivered) or
``ack_timeout_s`` passes (retry: the events may still be indexed later, so a
timeout can duplicate). A 2xx reply without ``ackId`` (the token has
acknowledgement off) counts as delivered, as without ``ack``.

Long text: Splunk cuts every event at the sourcetype's ``TRUNCATE`` (10,000
bytes unless props.conf says otherwise), which would leave broken JSON in
``_raw``. So when an alert's ``event`` JSON is longer than ``max_event_bytes``
(default 10,000) its ``description`` is cut at a character boundary to the
longest prefix that fits and ends with ``…[truncated]``. Other fields are
never cut: an alert whose other fields alone exceed the limit is sent whole.
Set ``max_event_bytes: 0`` (and ``TRUNCATE = 0`` for the sourcetype) to send
everything.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import orjson
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from mcpsift.alerts import Alert

from .http import USER_AGENT, HttpOutput, HttpUrl, outcome_of_status, redact_url
from .outputs import Outcome, OutputConfig, alert_document, config_error, config_secret, register_output

__all__ = ["SplunkHecConfig", "SplunkHecOutput", "hec_event"]

#: HEC codes that mean the events are malformed: retrying the same bytes cannot help
BAD_DATA_CODES = frozenset({5, 6, 12, 13, 15})

#: what ends a description cut to fit ``max_event_bytes``
TRUNCATION_MARK = "…[truncated]"

#: canonical alert fields that also become indexed fields when set
INDEXED_FIELDS = ("rule_id", "severity", "tenant", "principal_subject", "session_id", "server_resource")


class SplunkHecConfig(OutputConfig):
    """Options of ``type: splunk_hec``."""

    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["splunk_hec"]
    #: base URL of the collector, e.g. https://splunk.example.com:8088
    url: HttpUrl
    #: the HEC token: inline, in a file, or in an environment variable (one is required)
    token: Optional[SecretStr] = None
    token_file: Optional[Path] = None
    token_env: Optional[str] = None
    host: str = Field(default_factory=socket.gethostname, min_length=1)
    source: str = Field(default="mcpsift", min_length=1)
    sourcetype: str = Field(default="mcpsift:alert", min_length=1)
    #: target index (default: the token's default index)
    index: Optional[str] = Field(default=None, min_length=1)
    #: wait for indexer acknowledgement before counting an alert delivered
    ack: bool = False
    ack_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    ack_poll_s: float = Field(default=1.0, gt=0, le=60)
    #: cut the description so an event's JSON stays within this many bytes (0: never cut)
    max_event_bytes: int = Field(default=10_000, ge=0)

    _authorization: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _resolve_token(self) -> "SplunkHecConfig":
        token = (config_secret(self.token, self.token_file, self.token_env, "token") or "").strip()
        if not token:
            raise config_error("token is required: give token, token_file or token_env (the HEC token)")
        if not (token.isascii() and token.isprintable()):
            # checked here: an HTTP client's "illegal header" error would quote it
            raise config_error("token: must be printable ASCII (no line break or control character)")
        self._authorization = f"Splunk {token}"
        return self

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value (never shown)."""
        return self._authorization

    @property
    def base_url(self) -> str:
        """``url`` without a trailing slash or a pasted ``/services/collector[/event]``."""
        base = self.url.rstrip("/")
        for suffix in ("/services/collector/event", "/services/collector"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
        return base


def _event_json(alert: Alert, max_bytes: int) -> bytes:
    """The alert document as JSON, its description cut when the whole exceeds ``max_bytes``."""
    document = alert_document(alert)
    raw = orjson.dumps(document)
    if not max_bytes or len(raw) <= max_bytes:
        return raw
    text = alert.description
    # bytes the description may take as JSON (escapes count) next to the other fields
    budget = max_bytes - (len(raw) - _json_len(text)) - _json_len(TRUNCATION_MARK)
    keep, over = 0, len(text)  # the longest prefix that fits lies in [keep, over)
    while over - keep > 1:
        middle = (keep + over) // 2
        if _json_len(text[:middle]) <= budget:
            keep = middle
        else:
            over = middle
    document["description"] = text[:keep] + TRUNCATION_MARK
    return orjson.dumps(document)


def _json_len(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string."""
    return len(orjson.dumps(text)) - 2


def hec_event(alert: Alert, config: SplunkHecConfig) -> bytes:
    """One HEC event envelope (JSON, no newline) for ``alert``."""
    envelope: dict[str, Any] = {
        "time": round(alert.time.timestamp(), 3),
        "host": config.host,
        "source": config.source,
        "sourcetype": config.sourcetype,
    }
    if config.index is not None:
        envelope["index"] = config.index
    envelope["event"] = orjson.Fragment(_event_json(alert, config.max_event_bytes))
    envelope["fields"] = {k: getattr(alert, k) for k in INDEXED_FIELDS if getattr(alert, k) is not None}
    return orjson.dumps(envelope)


def _reply(response: Any) -> dict[str, Any]:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _batch_outcomes(response: Any, reply: dict[str, Any], count: int) -> Optional[list[Outcome]]:
    """Outcomes for a reply that settles the batch; None when HEC accepted it (code 0)."""
    status, text = response.status_code, response.text
    code = reply.get("code")
    if 200 <= status < 300:
        if code == 0:
            return None
        return [Outcome("retry", f"unexpected HEC reply (HTTP {status}): {text.strip()[:200]}")] * count
    if code in BAD_DATA_CODES:
        refused = Outcome("failed", f"HEC refused the data (HTTP {status}, code {code}: {reply.get('text', '')})")
        bad = reply.get("invalid-event-number")
        if isinstance(bad, int) and 0 <= bad < count:
            retry = Outcome("retry", f"HEC refused event {bad} of the batch (code {code}); resending the others")
            return [retry] * bad + [refused] + [retry] * (count - bad - 1)
        return [refused] * count
    return [outcome_of_status(status, response.headers, text)] * count


@register_output
class SplunkHecOutput(HttpOutput):
    """Sends alerts to a Splunk HTTP Event Collector (see the module docstring)."""

    type = "splunk_hec"
    Config = SplunkHecConfig
    config: SplunkHecConfig

    def __init__(self, config: SplunkHecConfig):
        super().__init__(config)
        base = config.base_url
        self._event_url = f"{base}/services/collector/event"
        self._headers = {
            "User-Agent": USER_AGENT,
            "Authorization": config.authorization,
            "Content-Type": "application/json",
        }
        if config.ack:
            channel = str(uuid.uuid4())
            self._headers["X-Splunk-Request-Channel"] = channel
            self._ack_url = f"{base}/services/collector/ack?channel={channel}"

    async def send(self, alerts: Sequence[Alert]) -> list[Outcome]:
        if not alerts:
            return []
        body = b"\n".join(hec_event(alert, self.config) for alert in alerts)
        response = await self.post(self._event_url, body, self._headers)
        if isinstance(response, Outcome):
            return [response] * len(alerts)
        reply = _reply(response)
        settled = _batch_outcomes(response, reply, len(alerts))
        if settled is not None:
            return settled
        ack_id = reply.get("ackId")
        if self.config.ack and isinstance(ack_id, int):
            return [await self._acknowledged(ack_id)] * len(alerts)
        return [Outcome.ok()] * len(alerts)

    async def _acknowledged(self, ack_id: int) -> Outcome:
        """Poll the ack endpoint until ``ack_id`` is indexed or ``ack_timeout_s`` passed."""
        cfg = self.config
        body = orjson.dumps({"acks": [ack_id]})
        deadline = time.monotonic() + cfg.ack_timeout_s
        last = "not indexed yet"
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(cfg.ack_poll_s, left))
            response = await self.post(self._ack_url, body, self._headers)
            if isinstance(response, Outcome):
                last = response.error
                continue
            acks = _reply(response).get("acks")
            if 200 <= response.status_code < 300 and isinstance(acks, dict):
                if acks.get(str(ack_id)) is True:
                    return Outcome.ok()
                last = "not indexed yet"
            else:
                last = f"HTTP {response.status_code}: {response.text.strip()[:200]}"
        return Outcome("retry", f"HEC did not acknowledge ackId {ack_id} within {cfg.ack_timeout_s:g} s ({last})")

    def max_send_s(self) -> float:
        # the event request, then acknowledgement polling for up to ack_timeout_s
        extra = self.config.ack_timeout_s + self.config.timeout_s if self.config.ack else 0.0
        return super().max_send_s() + extra

    def describe(self) -> str:
        ack = ", indexer ack" if self.config.ack else ""
        return f"splunk_hec {redact_url(self.config.base_url)}{ack}"
