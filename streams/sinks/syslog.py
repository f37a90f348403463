"""Syslog output: each alert as one RFC 5424 message over UDP (RFC 5426), TCP
(RFC 6587 octet counting) or TLS (RFC 5425), its MSG the alert as JSON or CEF.

When it is called: :meth:`SyslogOutput.open` builds the TLS context; the
socket (UDP) or the one persistent connection (TCP/TLS) is made by the first
:meth:`SyslogOutput.send` and made again after any error; concurrent sends
take turns on it; :meth:`SyslogOutput.close` closes it.

The message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID name="value" ...] MSG

* PRI = facility * 8 + severity, alert severity mapped as critical -> 2
  (Critical), high -> 3 (Error), medium -> 4 (Warning), low -> 5 (Notice);
  the facility defaults to ``local0`` (16), away from the OS auth logs.
* TIMESTAMP is the alert's time in UTC with milliseconds
  (``2026-11-20T08:00:01.250Z``); PROCID the process id; MSGID the rule id
  (characters outside PRINTUSASCII become ``_``, at most 32).
* One SD-ELEMENT ``[mcpsift@32473 ...]`` (``sd_id``; 32473 is the IANA
  example enterprise number of RFC 5612: set your own PEN if you have one)
  with alert_id, rule_id, severity, score, tenant, principal_subject,
  client_id, session_id, token_fingerprint, server_resource, attack
  (comma-separated) and detector, the ones that are set. ``"``, ``\\`` and
  ``]`` are escaped with ``\\`` (RFC 5424 section 6.3.3).
* MSG ``json``: the UTF-8 BOM, then the compact canonical alert JSON.
  MSG ``cef``: the CEF event (:func:`cef_event`) without a BOM (RFC 5424
  MSG-ANY), because CEF receivers look for ``CEF:`` at the start of MSG.

Text that a format cannot escape is replaced, so framing never breaks and the
bytes are valid UTF-8: in SD values and the CEF header TAB, LF, VT, FF and CR
become a space (in CEF extension values LF and CR are escaped as ``\\n`` and
``\\r``, the others become a space); every other C0 and C1 control
character and DEL becomes U+FFFD.

Length: a message is at most ``max_message_bytes`` (default 2048 for UDP, the
size RFC 5426 receivers SHOULD accept; 8192 for TCP/TLS, the size RFC 5425
receivers SHOULD accept and rsyslog's default; allowed 480 to 65507 for UDP,
to 1 MiB for TCP/TLS), not counting the TCP/TLS ``MSG-LEN SP`` prefix. A
longer alert is cut before rendering, so the result stays valid JSON/CEF: the
description first, then title, server_resource, client_id, principal_subject
(each cut at a character and ending in "…"), then event_ids (at least one
kept). An alert that still does not fit is ``failed``.

Delivery: syslog has no acknowledgement. UDP is fire and forget: an alert is
``delivered`` once its datagram is handed to the kernel. TCP/TLS: an alert is
``delivered`` once its frame is written to the connection (asyncio's and the
kernel's send buffers; writing waits while more than 64 KiB is unsent), which
is not proof the receiver processed it. A connection the receiver closed is
noticed before the next batch; frames written just before a connection
breaks can be lost ("written to the socket" is all TCP/TLS syslog promises).
A failed connect or write gives ``retry`` for the alerts not yet written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import select
import socket
import ssl
from typing import Any, Callable, Literal, Optional, Sequence, Union

import orjson
from pydantic import Field, field_validator, model_validator

import mcpsift
from mcpsift.alerts import Alert

from .outputs import Outcome, Output, OutputConfig, alert_document, error_text, register_output

__all__ = [
    "CEF_SEVERITY",
    "FACILITIES",
    "SYSLOG_SEVERITY",
    "SyslogConfig",
    "SyslogOutput",
    "cef_event",
    "fit_message",
    "structured_data",
]

#: facility names (as in syslog.h) for the codes of RFC 5424 table 1
FACILITIES: dict[str, int] = {
    **{name: code for code, name in enumerate(
        "kern user mail daemon auth syslog lpr news uucp cron authpriv ftp ntp audit alert clock".split()
    )},
    **{f"local{i}": 16 + i for i in range(8)},
}
#: alert severity -> syslog severity (RFC 5424 table 2)
SYSLOG_SEVERITY: dict[str, int] = {"critical": 2, "high": 3, "medium": 4, "low": 5}
#: alert severity -> CEF severity (0..10)
CEF_SEVERITY: dict[str, int] = {"low": 3, "medium": 5, "high": 8, "critical": 10}

DEFAULT_PORT = {"udp": 514, "tcp": 514, "tls": 6514}
DEFAULT_MAX_MESSAGE_BYTES = {"udp": 2048, "tcp": 8192, "tls": 8192}
#: the largest UDP payload over IPv4
UDP_MAX_BYTES = 65_507
BOM = b"\xef\xbb\xbf"
ELLIPSIS = "\u2026"

_PRINTUSASCII = re.compile(r"[!-~]+")
#: name@<private enterprise number>; the name is PRINTUSASCII without = ] " @
_SD_ID = re.compile(r"[!#-<>?A-\\^-~]+@[0-9]+(\.[0-9]+)*")
_NOT_PRINTUSASCII = re.compile(r"[^!-~]")


def _escapes(special: dict[str, str]) -> dict[int, str]:
    """A str.translate table: ``special`` escapes, the line-break controls to a
    space, every other C0/C1 control and DEL to U+FFFD."""
    table = {code: "\ufffd" for code in [*range(0x20), *range(0x7F, 0xA0)]}
    table.update({ord(c): " " for c in "\t\n\v\f\r"})
    table.update({ord(c): esc for c, esc in special.items()})
    return table


_SD_VALUE = _escapes({'"': '\\"', "\\": "\\\\", "]": "\\]"})
_CEF_HEADER = _escapes({"\\": "\\\\", "|": "\\|"})
_CEF_VALUE = _escapes({"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r"})


def _printusascii(text: str, limit: int) -> str:
    """``text`` as an RFC 5424 header field: PRINTUSASCII, at most ``limit``, ``-`` when empty."""
    return _NOT_PRINTUSASCII.sub("_", text)[:limit] or "-"


def _check_printusascii(value: str, what: str, limit: int) -> str:
    if not (len(value) <= limit and _PRINTUSASCII.fullmatch(value)):
        raise ValueError(f"{what} must be 1 to {limit} printable US-ASCII characters without spaces (RFC 5424)")
    return value


class SyslogConfig(OutputConfig):
    """``type: syslog`` options."""

    type: Literal["syslog"] = "syslog"
    #: receiver host name or IP address
    host: str = Field(min_length=1)
    #: default 514 (udp, tcp) or 6514 (tls)
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "udp"
    #: MSG as the canonical alert JSON or as a CEF event
    format: Literal["json", "cef"] = "json"
    #: a name (local0..local7, auth, authpriv, ...) or a number 0..23
    facility: int = Field(default=FACILITIES["local0"], ge=0, le=23)
    app_name: str = "mcpsift"
    #: HOSTNAME field; default: this machine's host name
    hostname: Optional[str] = None
    #: SD-ID of the structured data: name@<private enterprise number>
    sd_id: str = "mcpsift@32473"
    #: longest message; default 2048 (udp) or 8192 (tcp, tls)
    max_message_bytes: Optional[int] = Field(default=None, ge=480, le=1_048_576)

    @field_validator("facility", mode="before")
    @classmethod
    def _facility(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().lower()
        if name.isdigit():
            return int(name)
        if name not in FACILITIES:
            raise ValueError(f"unknown facility {value!r}: use a number 0-23 or one of {', '.join(FACILITIES)}")
        return FACILITIES[name]

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if "://" in value or "/" in value or any(c.isspace() for c in value):
            raise ValueError(
                f"{value!r} is not a host name or IP address (put the port in 'port' and udp/tcp/tls in 'transport')"
            )
        return value

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, value: str) -> str:
        return _check_printusascii(value, "app_name", 48)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: Optional[str]) -> Optional[str]:
        return value if value is None else _check_printusascii(value, "hostname", 255)

    @field_validator("sd_id")
    @classmethod
    def _sd_id(cls, value: str) -> str:
        if len(value) > 32 or not _SD_ID.fullmatch(value):
            raise ValueError(
                "sd_id must be name@<private enterprise number>, at most 32 printable US-ASCII characters "
                'without space, =, ] or " (RFC 5424 section 7.2.2)'
            )
        return value

    @model_validator(mode="after")
    def _transport_defaults(self) -> "SyslogConfig":
        if self.port is None:
            self.port = DEFAULT_PORT[self.transport]
        if self.max_message_bytes is None:
            self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES[self.transport]
        if self.transport == "udp" and self.max_message_bytes > UDP_MAX_BYTES:
            raise ValueError(f"max_message_bytes is at most {UDP_MAX_BYTES} over udp (the largest datagram)")
        if self.transport != "tls" and "tls" in self.model_fields_set:
            raise ValueError("'tls' options need transport: tls")
        return self


def structured_data(alert: Alert, sd_id: str) -> str:
    """The SD-ELEMENT for ``alert``: its identifying fields, escaped per RFC 5424."""
    params = {
        "alert_id": alert.alert_id,
        "rule_id": alert.rule_id,
        "severity": alert.severity,
        "score": repr(alert.score),
        "tenant": alert.tenant,
        "principal_subject": alert.principal_subject,
        "client_id": alert.client_id,
        "session_id": alert.session_id,
        "token_fingerprint": alert.token_fingerprint,
        "server_resource": alert.server_resource,
        "attack": ",".join(alert.attack) or None,
        "detector": alert.detector,
    }
    body = "".join(f' {name}="{value.translate(_SD_VALUE)}"' for name, value in params.items() if value is not None)
    return f"[{sd_id}{body}]"


def cef_event(alert: Alert) -> str:
    """``alert`` as one ArcSight CEF event, header and extension escaped per the CEF rules.

    Header: ``CEF:0|mcpsift|mcpsift|<version>|<rule_id>|<title>|<severity>`` (severity
    low 3, medium 5, high 8, critical 10). Extension: rt (ms since the epoch),
    externalId (alert_id), cat (rule_id), suser (principal_subject), request
    (server_resource), cs1 tenant, cs2 session_id, cs3 client_id, cs4
    token_fingerprint, cs5 attack, cs6 event_ids (comma-separated), cfp1 score,
    flexString1 detector (each with its ``...Label``), msg (description), unset ones left out.
    """
    header = ["CEF:0", "mcpsift", "mcpsift", mcpsift.__version__, alert.rule_id, alert.title]
    rt = (alert.time - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(milliseconds=1)
    extension: list[tuple[str, Optional[str]]] = [
        ("rt", str(rt)),
        ("externalId", alert.alert_id),
        ("cat", alert.rule_id),
        ("suser", alert.principal_subject),
        ("request", alert.server_resource),
        *_labelled("cs1", "tenant", alert.tenant),
        *_labelled("cs2", "session_id", alert.session_id),
        *_labelled("cs3", "client_id", alert.client_id),
        *_labelled("cs4", "token_fingerprint", alert.token_fingerprint),
        *_labelled("cs5", "attack", ",".join(alert.attack) or None),
        *_labelled("cs6", "event_ids", ",".join(alert.event_ids)),
        *_labelled("cfp1", "score", repr(alert.score)),
        *_labelled("flexString1", "detector", alert.detector),
        ("msg", alert.description),
    ]
    return (
        "|".join(field.translate(_CEF_HEADER) for field in header)
        + f"|{CEF_SEVERITY[alert.severity]}|"
        + " ".join(f"{key}={value.translate(_CEF_VALUE)}" for key, value in extension if value is not None)
    )


def _labelled(key: str, label: str, value: Optional[str]) -> list[tuple[str, Optional[str]]]:
    return [] if value is None else [(f"{key}Label", label), (key, value)]


#: fields cut, in this order, when a message is too long (free text first)
_SHRINKABLE = ("description", "title", "server_resource", "client_id", "principal_subject", "event_ids")


def fit_message(alert: Alert, render: Callable[[Alert], bytes], limit: int) -> Optional[bytes]:
    """``render(alert)`` if it fits in ``limit`` bytes, else the rendering of the
    alert with its text cut (see the module docstring); None when nothing fits.

    Cutting happens before rendering, so escapes and characters stay whole."""
    message = render(alert)
    for field in _SHRINKABLE:
        if len(message) <= limit:
            return message
        value: Union[str, list[str], None] = getattr(alert, field)
        if not value:
            continue
        smallest = 1 if field == "event_ids" else 0

        def cut(n: int, value: Any = value) -> Any:
            return value[:n] + ELLIPSIS if isinstance(value, str) else value[:n]

        # binary search for the longest prefix that fits (it has at most ``limit`` characters)
        lo, hi, best = smallest, min(len(value) - 1, limit), None
        while lo <= hi:
            mid = (lo + hi) // 2
            candidate = render(alert.model_copy(update={field: cut(mid)}))
            if len(candidate) <= limit:
                best, lo = candidate, mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best
        alert = alert.model_copy(update={field: cut(smallest)})
        message = render(alert)
    return message if len(message) <= limit else None


class _Udp:
    """A connected UDP socket; one datagram per message."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._sock: Optional[socket.socket] = None

    async def send(self, messages: Sequence[bytes], timeout_s: float) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        if self._sock is None:
            try:
                family, kind, proto, _, address = (
                    await asyncio.wait_for(loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM), timeout_s)
                )[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                sock.connect(address)
            except Exception as exc:
                return [Outcome("retry", error_text(exc))] * len(messages)
            self._sock = sock
        outcomes = []
        for message in messages:
            try:
                await asyncio.wait_for(loop.sock_sendall(self._sock, message), timeout_s)
                outcomes.append(Outcome.ok())
            except Exception as exc:  # e.g. ECONNREFUSED from an ICMP error for an earlier datagram
                outcomes.append(Outcome("retry", error_text(exc)))
        return outcomes

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Stream:
    """One TCP or TLS connection; each message framed as ``MSG-LEN SP MSG``."""

    def __init__(self, host: str, port: int, ssl_context: Optional[ssl.SSLContext], server_name: Optional[str]):
        self.host, self.port, self.ssl, self.server_name = host, port, ssl_context, server_name
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None

    async def _connect(self, timeout_s: float) -> asyncio.StreamWriter:
        if self._writer is not None and await self._peer_closed():
            await self.close()
        if self._writer is None:
            tls: dict[str, Any] = {}
            if self.ssl is not None:
                tls = {"ssl": self.ssl, "server_hostname": self.server_name or self.host,
                       "ssl_handshake_timeout": timeout_s}
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, **tls), timeout_s
            )
        return self._writer

    async def _peer_closed(self) -> bool:
        """True when the receiver closed the connection since the last batch (a
        restart): the loop is first given the turns it needs to take in a FIN or
        RST still waiting on the socket, so the next frame is not lost in a dead one."""
        writer, reader = self._writer, self._reader
        if writer is None or reader is None:
            return True
        sock = writer.get_extra_info("socket")
        for _ in range(10):
            if writer.is_closing() or reader.at_eof():
                return True
            if sock is None or not select.select([sock], [], [], 0)[0]:
                return False
            await asyncio.sleep(0)
        return False

    async def send(self, messages: Sequence[bytes], timeout_s: float) -> list[Outcome]:
        written = 0
        try:
            writer = await self._connect(timeout_s)
            for message in messages:
                writer.write(b"%d %s" % (len(message), message))
                await asyncio.wait_for(writer.drain(), timeout_s)
                written += 1
        except Exception as exc:
            await self.close()
            return [Outcome.ok()] * written + [Outcome("retry", error_text(exc))] * (len(messages) - written)
        return [Outcome.ok()] * written

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except Exception:  # broken, or a TLS peer that does not answer close_notify
                writer.transport.abort()


@register_output
class SyslogOutput(Output):
    """Sends each alert as an RFC 5424 syslog message (see the module docstring)."""

    type = "syslog"
    Config = SyslogConfig

    def __init__(self, config: SyslogConfig):
        super().__init__(config)
        self.config: SyslogConfig = config
        hostname = config.hostname or _printusascii(socket.gethostname(), 255)
        self._fields = f"{hostname} {config.app_name} {os.getpid()}"
        self._lock = asyncio.Lock()
        self._channel: Union[_Udp, _Stream, None] = None

    async def open(self) -> None:
        cfg = self.config
        if cfg.transport == "udp":
            self._channel = _Udp(cfg.host, cfg.port)  # type: ignore[arg-type]
        else:
            context = cfg.tls.context() if cfg.transport == "tls" else None
            self._channel = _Stream(cfg.host, cfg.port, context, cfg.tls.server_name)  # type: ignore[arg-type]

    def render(self, alert: Alert) -> bytes:
        """The whole RFC 5424 message for ``alert``, uncut."""
        cfg = self.config
        time = alert.time.astimezone(dt.timezone.utc)
        header = (
            f"<{cfg.facility * 8 + SYSLOG_SEVERITY[alert.severity]}>1 "
            f"{time:%Y-%m-%dT%H:%M:%S}.{time.microsecond // 1000:03d}Z {self._fields} "
            f"{_printusascii(alert.rule_id, 32)} {structured_data(alert, cfg.sd_id)} "
        )
        if cfg.format == "json":
            return header.encode() + BOM + orjson.dumps(alert_document(alert))
        return (header + cef_event(alert)).encode()

    async def send(self, alerts: Sequence[Alert]) -> list[Outcome]:
        if self._channel is None:
            await self.open()
        limit = self.config.max_message_bytes
        outcomes: list[Optional[Outcome]] = [None] * len(alerts)
        indexes, messages = [], []
        for i, alert in enumerate(alerts):
            message = fit_message(alert, self.render, limit)  # type: ignore[arg-type]
            if message is None:
                outcomes[i] = Outcome(
                    "failed", f"alert {alert.alert_id} does not fit in max_message_bytes={limit}: raise it"
                )
            else:
                indexes.append(i)
                messages.append(message)
        if not messages:
            return outcomes  # type: ignore[return-value]
        async with self._lock:
            sent = await self._channel.send(messages, self.config.timeout_s)  # type: ignore[union-attr]
        for i, outcome in zip(indexes, sent):
            outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def describe(self) -> str:
        cfg = self.config
        facility = next((n for n, c in FACILITIES.items() if c == cfg.facility), str(cfg.facility))
        return f"syslog {cfg.transport}://{cfg.host}:{cfg.port} ({cfg.format}, facility {facility})"
