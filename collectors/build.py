"""Building events, shared by every hook (docs/events.md "Envelope").

Each hook (SDK middleware, fastmcp middleware, token verifier, ASGI
middleware) owns one :class:`EventFactory`. The hook calls
:meth:`EventFactory.event` when something happened (a request completed, a
token was verified, a challenge was sent) to get a fresh envelope, adds the
payload, and hands it to :meth:`EventFactory.submit`. Everything here runs on
the MCP request path, so it is built to be cheap: the static envelope parts
are made once, a token's ``token`` / ``principal`` objects once per distinct
token, timestamps from a per-second cache, ids without a system call.

It also carries what the ASGI middleware learns about an HTTP request (client
ip behind trusted proxies, user agent, ``Mcp-Session-Id``, where a token was
found) to the hooks that run further down in the same request:
:func:`current_request` reads it from a context variable the SDK propagates to
its handlers.

Events are plain dicts. Treat a submitted event as read-only: its nested
objects (``source``, ``server``, ``token``, ``principal``) are shared between
events to keep building them cheap.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import collections
import contextvars
import ipaddress
import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Union

import orjson

from mcpsift.canonical import canonical_json

from . import fingerprint_token
from .redact import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_STRING_BYTES, Redactor, secret_kind
from .sink import EventSink

__all__ = [
    "EventFactory",
    "defer",
    "flush_pending",
    "pending_count",
    "RequestInfo",
    "current_request",
    "set_current_request",
    "reset_current_request",
    "client_ip",
    "parse_networks",
    "new_event_id",
    "rfc3339",
    "unverified_jwt",
    "payload_hash",
    "sha256_of",
    "SCHEMA",
    "SOURCE_KINDS",
]

SCHEMA = "mcpsift.event/1"
SOURCE_KINDS = ("server", "gateway", "client", "authorization_server")
TRANSPORTS = ("stdio", "streamable-http", "sse", "other")

logger = logging.getLogger("mcpsift.collectors")

# --------------------------------------------------------------------------
# ids and times


class _Uuid7:
    """UUIDv7 strings: 48-bit Unix milliseconds, 12 random bits drawn once per
    process, then a 62-bit per-process counter that starts at a random value.

    Ids of one process sort in creation order (the counter only grows) and
    never repeat; two processes draw independent random starting points in a
    2**74 space, so their ids do not meet. No lock (``next()`` on an
    ``itertools.count`` is atomic under the GIL), no system call per id, and
    the time part is formatted once per millisecond. A forked child draws new
    random bits.
    """

    def __init__(self) -> None:
        self._reseed()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        seed = int.from_bytes(os.urandom(10), "big")
        self._rand_a = seed & 0xFFF
        self._counter = itertools.count((seed >> 12) & 0x3FFFFFFFFFFFFFFF)
        self._prefix = (-1, "")

    def __call__(self, ms: Optional[int] = None) -> str:
        """A new id; ``ms``: its time part (Unix milliseconds), default now."""
        if ms is None:
            ms = time.time_ns() // 1_000_000
        cached_ms, prefix = self._prefix
        if cached_ms != ms:
            h = "%012x" % ms
            prefix = "%s-%s-7%03x-" % (h[:8], h[8:12], self._rand_a)
            self._prefix = (ms, prefix)
        tail = "%016x" % (0x8000000000000000 | (next(self._counter) & 0x3FFFFFFFFFFFFFFF))
        return f"{prefix}{tail[:4]}-{tail[4:]}"


new_event_id = _Uuid7()
"""A new ``event_id`` (a UUIDv7 string)."""

_second_cache: tuple[int, str] = (-1, "")


def rfc3339(t: float) -> str:
    """``t`` (POSIX seconds) as RFC 3339 UTC with milliseconds: ``2026-11-20T09:00:01.120Z``."""
    return _rfc3339_ms(int(t * 1000))


def _rfc3339_ms(ms_total: int) -> str:
    global _second_cache
    sec = ms_total // 1000
    cached_sec, prefix = _second_cache
    if cached_sec != sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache = (sec, prefix)
    return "%s.%03dZ" % (prefix, ms_total - sec * 1000)


def _rfc3339_seconds(value: Any) -> Optional[str]:
    """A JWT ``iat`` / ``exp`` (seconds since the epoch) as RFC 3339, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not 0 <= value < 253_402_300_800:  # year 10000
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(value)))


# --------------------------------------------------------------------------
# Building off the request path
#
# A hook captures what it needs (references to the request's params and
# result, the access token, the request info, times) in about a microsecond
# and defers building the event: the build runs on the same event loop about
# DEFER_DELAY_S later, a few events at a time, after the response has gone.
# Measured (bench/bench_hooks.py): built inline, an event costs the request
# ~30 us at p50 -- the same code costs ~7 us in a tight loop, the rest is the
# CPU caches the SDK's request path leaves cold; deferred, the request pays
# ~10 us and the process ~5 % less CPU. Longer delays and bigger batches were
# measured worse (the pending requests' objects outlive the young GC
# generation, and one request absorbs the whole batch). One FIFO for every
# hook in the process, so events are submitted in the order things happened.

DEFER_DELAY_S = 0.002
#: builds per loop callback; the rest continue in the next callback, so one
#: request never waits behind a long batch
DEFER_CHUNK = 16
#: beyond this many pending builds, the hook builds right away (backpressure)
MAX_PENDING = 8192

_pending: collections.deque[tuple[Any, tuple[Any, ...]]] = collections.deque()
_scheduled: set[int] = set()


def defer(build: Any, *args: Any) -> None:
    """Run ``build(*args)`` soon on the running event loop, after everything
    deferred before it; right away when there is no running loop (a sync
    caller, another thread) or too much is pending. ``build`` must not raise
    (the hooks' builders catch and count their own errors)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on an event loop: nothing to defer to
        build(*args)
        return
    _pending.append((build, args))
    if len(_pending) > MAX_PENDING:
        flush_pending()
        return
    key = id(loop)
    if key not in _scheduled:
        _scheduled.add(key)
        loop.call_later(DEFER_DELAY_S, _run_deferred, loop, key)


def _run_deferred(loop: Any, key: int) -> None:
    ran = flush_pending(DEFER_CHUNK)
    if _pending and ran:
        loop.call_soon(_run_deferred, loop, key)  # the rest, after other ready callbacks
    else:
        _scheduled.discard(key)


def flush_pending(limit: Optional[int] = None) -> int:
    """Build and submit every deferred event now (at most ``limit``); returns
    how many. Call it before reading a sink when the event loop that served
    the requests has ended (a test with ``anyio.run``), and before closing a
    publisher (its ``close()`` should do it); it also runs at interpreter exit."""
    ran = 0
    while limit is None or ran < limit:
        try:
            build, args = _pending.popleft()
        except IndexError:
            break
        try:
            build(*args)
        except Exception as exc:  # pragma: no cover - builders catch their own errors
            # the type only: a message could quote the request
            logger.warning("mcpsift: a deferred audit event failed to build (%s)", type(exc).__name__)
        ran += 1
    return ran


atexit.register(flush_pending)


def pending_count() -> int:
    """How many events are waiting to be built."""
    return len(_pending)


# --------------------------------------------------------------------------
# What the ASGI middleware learned about the current HTTP request


@dataclass(slots=True)
class RequestInfo:
    """One HTTP request as the ASGI middleware saw it (set per request)."""

    client_ip: Optional[str] = None
    user_agent: Optional[str] = None
    session_id: Optional[str] = None
    transport: str = "streamable-http"
    #: fingerprint of a bearer token found in the URI query string
    query_token_fingerprint: Optional[str] = None
    #: set by the token verifier when it reported that token itself
    query_token_reported: bool = False
    #: the ``network`` object for events, built once per request
    network: Optional[dict[str, str]] = None


_CURRENT: contextvars.ContextVar[Optional[RequestInfo]] = contextvars.ContextVar("mcpsift_request", default=None)


def current_request() -> Optional[RequestInfo]:
    """The :class:`RequestInfo` of the HTTP request being served, when the ASGI
    middleware is installed in front of this code; else None."""
    return _CURRENT.get()


def set_current_request(info: Optional[RequestInfo]) -> contextvars.Token[Optional[RequestInfo]]:
    return _CURRENT.set(info)


def reset_current_request(token: contextvars.Token[Optional[RequestInfo]]) -> None:
    _CURRENT.reset(token)


Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Trusted proxies as networks; an address without a prefix is one host."""
    if isinstance(cidrs, str):
        raise TypeError("trusted_proxies takes a list of CIDRs or addresses, e.g. ['10.0.0.0/8'], not one string")
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(str(cidr).strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"trusted_proxies: {cidr!r} is not an IP address or CIDR (e.g. '10.0.0.0/8', '192.0.2.7')"
            ) from None
    return tuple(out)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def client_ip(peer: Optional[str], forwarded_for: Optional[str], trusted: tuple[Network, ...]) -> Optional[str]:
    """The client address: the TCP peer, unless the peer is a trusted proxy, in
    which case the right-most ``X-Forwarded-For`` entry that is not a trusted
    proxy (entries to its left are client-supplied and cannot be believed)."""
    if not trusted or not forwarded_for or peer is None or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return _strip_port(hop)
    return _strip_port(hops[0]) if hops else peer


def _strip_port(hop: str) -> str:
    if hop.startswith("["):  # [2001:db8::1]:443
        return hop[1 : hop.index("]")] if "]" in hop else hop
    if hop.count(":") == 1:  # 203.0.113.7:51234
        return hop.split(":", 1)[0]
    return hop


# --------------------------------------------------------------------------
# Tokens read without trusting them


def _b64json(segment: str) -> Optional[dict[str, Any]]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def unverified_jwt(token: str) -> tuple[Optional[dict[str, Any]], Optional[dict[str, Any]]]:
    """``(header, claims)`` of a JWS compact token, decoded **without checking
    the signature**; ``(None, None)`` for anything else (an opaque token).

    What it returns is what the client sent, not what anyone vouched for: it
    describes a token in an audit event and must never decide access.
    """
    if token.count(".") != 2 or len(token) > 16384:
        return None, None
    header_b64, payload_b64, _ = token.split(".")
    header = _b64json(header_b64)
    if header is None:
        return None, None
    return header, _b64json(payload_b64)


_MAX_FIELD = 1024


def _clean(value: Any) -> Optional[str]:
    """A claim fit for ``token`` / ``principal``: a short string that does not
    itself look like a credential (the pipeline rejects such events)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        return None
    if secret_kind(value) is not None:
        return None
    return value


def _clean_list(value: Any) -> Optional[list[str]]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return None
    out = [v for v in (_clean(item) for item in value[:64]) if v is not None]
    return out or None


def _scopes(claims: Mapping[str, Any]) -> Optional[list[str]]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return _clean_list(scope.split())
    for name in ("scp", "scopes"):
        value = claims.get(name)
        if isinstance(value, str):
            return _clean_list(value.split())
        if isinstance(value, list):
            return _clean_list(value)
    return None


# --------------------------------------------------------------------------

_warned_plain_fingerprint = False
_TOKEN_CACHE_MAX = 1024


class EventFactory:
    """Builds events for one hook configuration and submits them to a sink.

    Options (every hook takes them as keyword arguments):

    * ``source_name``, ``source_kind`` (``server``, ``gateway``, ``client``,
      ``authorization_server``), ``source_instance``, ``source_version``: the
      ``source`` object; ``source_name`` defaults to ``server_name``.
    * ``server_name``, ``server_resource`` (its canonical resource URI, what a
      correct token audience holds): the ``server`` object.
    * ``tenant``: default ``"default"``.
    * ``fingerprint_key``: key of the HMAC-SHA256 token fingerprints (bytes or
      text; default: the ``MCPSIFT_FINGERPRINT_KEY`` environment variable).
      Without one, fingerprints are plain ``sha256:`` and a warning is logged
      once: anyone reading the events can then test a guessed token.
    * ``allow_keys``, ``deny_keys``, ``max_string_bytes`` (4096),
      ``max_event_bytes`` (32768): redaction, see :mod:`.redact`.
    * ``include_result_excerpt``: send a redacted, truncated text of tool
      results (off by default).
    * ``trusted_proxies``: CIDRs whose ``X-Forwarded-For`` is believed.
    * ``transport``: force ``session.transport`` (default: detected).
    * ``join_traces``: put the current OpenTelemetry trace/span ids on events
      (default True; free when OpenTelemetry is not installed or no tracer
      provider is configured).
    * ``defer``: build events off the request path (default True, see
      :func:`defer`); False builds and submits them before the hook returns.
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        source_name: Optional[str] = None,
        source_kind: str = "server",
        source_instance: Optional[str] = None,
        source_version: Optional[str] = None,
        server_name: Optional[str] = None,
        server_resource: Optional[str] = None,
        tenant: Optional[str] = None,
        fingerprint_key: Union[bytes, str, None] = None,
        allow_keys: Iterable[str] = (),
        deny_keys: Union[Iterable[str], Mapping[str, str]] = (),
        max_string_bytes: int = DEFAULT_MAX_STRING_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        include_result_excerpt: bool = False,
        trusted_proxies: Iterable[str] = (),
        transport: Optional[str] = None,
        join_traces: bool = True,
        defer: bool = True,
    ) -> None:
        if not callable(getattr(sink, "submit", None)):
            raise TypeError(
                f"sink must have a submit(event) method (an EventSink such as a publisher or ListSink), "
                f"got {type(sink).__name__}"
            )
        if source_kind not in SOURCE_KINDS:
            raise ValueError(f"source_kind must be one of {', '.join(SOURCE_KINDS)}, got {source_kind!r}")
        if transport is not None and transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        name = source_name or server_name
        if not name:
            raise ValueError("name the source: pass source_name= (or server_name=), e.g. source_name='crm-mcp'")
        self.sink = sink
        self.redactor = Redactor(
            allow_keys=allow_keys,
            deny_keys=deny_keys,
            max_string_bytes=max_string_bytes,
            max_event_bytes=max_event_bytes,
        )
        self.include_result_excerpt = bool(include_result_excerpt)
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.transport = transport
        self.tenant = tenant or "default"
        source: dict[str, str] = {"kind": source_kind, "name": name}
        if source_instance:
            source["instance"] = source_instance
        if source_version:
            source["version"] = source_version
        self.source = source
        server: dict[str, str] = {}
        if server_name:
            server["name"] = server_name
        if server_resource:
            server["resource"] = server_resource
        self.server = server or None
        key = fingerprint_key if fingerprint_key is not None else os.environ.get("MCPSIFT_FINGERPRINT_KEY")
        self.fingerprint_key: Optional[bytes] = key.encode("utf-8") if isinstance(key, str) else key
        if not self.fingerprint_key:
            self.fingerprint_key = None
            _warn_plain_fingerprint()
        self._token_cache: dict[str, tuple[Optional[dict[str, str]], dict[str, Any]]] = {}
        self._trace = _trace_reader() if join_traces else None
        self.defer = bool(defer)
        #: events handed to the sink / refused by it (full) / lost to an error building them
        self.stats = {"submitted": 0, "dropped": 0, "failed": 0}
        self._reported: set[str] = set()

    # -- envelope ---------------------------------------------------------------
    def event(self, type_: str, t: Optional[float] = None) -> dict[str, Any]:
        """A new event of ``type_`` that happened at ``t`` (default: now)."""
        ms = int((time.time() if t is None else t) * 1000)
        event: dict[str, Any] = {
            "schema": SCHEMA,
            "event_id": new_event_id(ms),
            "time": _rfc3339_ms(ms),
            "type": type_,
            "tenant": self.tenant,
            "source": self.source,
        }
        if self.server is not None:
            event["server"] = self.server
        return event

    def later(self, build: Any, *args: Any) -> None:
        """Run ``build(*args)`` off the request path (or now, with ``defer=False``)."""
        if self.defer:
            defer(build, *args)
        else:
            build(*args)

    def trace(self) -> Optional[dict[str, str]]:
        """``{"trace_id", "span_id"}`` of the current OpenTelemetry span, if any."""
        return self._trace() if self._trace is not None else None

    def submit(self, event: dict[str, Any]) -> bool:
        """Hand ``event`` to the sink; never raises."""
        try:
            accepted = self.sink.submit(event)
        except Exception as exc:  # a sink must not raise; if one does, the server still must not
            self.failed("sink.submit", exc)
            return False
        if accepted is False:
            self.stats["dropped"] += 1
            return False
        self.stats["submitted"] += 1
        return True

    def failed(self, where: str, exc: BaseException) -> None:
        """Count an event lost to an error in a hook; log the first one of each
        place. Only the exception type is logged: its message could quote a
        request (a token, an argument)."""
        self.stats["failed"] += 1
        if where not in self._reported:
            self._reported.add(where)
            logger.warning(
                "mcpsift: an audit event was lost (%s raised %s); the request itself was served. "
                "Further failures here are only counted (hook.events.stats['failed']).",
                where,
                type(exc).__name__,
            )

    # -- token and principal ------------------------------------------------------
    def fingerprint(self, raw_token: str) -> str:
        return fingerprint_token(raw_token, self.fingerprint_key)

    def token_parts(self, raw_token: str, access_token: Any = None) -> tuple[Optional[dict[str, str]], dict[str, Any]]:
        """``(principal, token)`` objects for a presented bearer token.

        The token's claims are read without verifying it (see
        :func:`unverified_jwt`); what the token verifier returned
        (``access_token``: an ``AccessToken`` or anything with ``client_id``,
        ``subject``, ``scopes``, ``expires_at``, ``resource``, ``claims``) fills
        what the token does not say (opaque tokens). Cached per token.
        """
        cached = self._token_cache.get(raw_token)
        if cached is not None and (access_token is None or cached[0] is not None):
            return cached
        parts = self._token_parts(raw_token, access_token)
        if len(self._token_cache) >= _TOKEN_CACHE_MAX:
            self._token_cache.clear()
        self._token_cache[raw_token] = parts
        return parts

    def _token_parts(self, raw_token: str, at: Any) -> tuple[Optional[dict[str, str]], dict[str, Any]]:
        header, claims = unverified_jwt(raw_token)
        claims = claims or {}
        at_claims = getattr(at, "claims", None) or {}
        token: dict[str, Any] = {"fingerprint": self.fingerprint(raw_token)}
        jti = _clean(claims.get("jti") or at_claims.get("jti"))
        if jti:
            token["jti"] = jti
        audience = _clean_list(claims.get("aud") if "aud" in claims else at_claims.get("aud"))
        if audience is None and getattr(at, "resource", None):
            audience = _clean_list(at.resource)
        if audience:
            token["audience"] = audience
        scopes = _scopes(claims) or _scopes(at_claims)
        if scopes is None and getattr(at, "scopes", None):
            scopes = _clean_list(list(at.scopes))
        if scopes:
            token["scopes"] = scopes
        issued = _rfc3339_seconds(claims.get("iat", at_claims.get("iat")))
        if issued:
            token["issued_at"] = issued
        expires = _rfc3339_seconds(claims.get("exp", at_claims.get("exp", getattr(at, "expires_at", None))))
        if expires:
            token["expires_at"] = expires
        alg = _clean(header.get("alg")) if header is not None else "opaque"
        if alg:
            token["alg"] = alg
        issuer = _clean(claims.get("iss") or at_claims.get("iss"))
        if issuer:
            token["issuer"] = issuer
        principal: dict[str, str] = {}
        subject = _clean(claims.get("sub") or getattr(at, "subject", None) or at_claims.get("sub"))
        if subject:
            principal["subject"] = subject
        if issuer:
            principal["issuer"] = issuer
        client_id = _clean(
            getattr(at, "client_id", None) or claims.get("client_id") or claims.get("azp") or claims.get("cid")
        )
        if client_id:
            principal["client_id"] = client_id
        return principal or None, token

    # -- network ---------------------------------------------------------------------
    def network_from_scope(self, scope: Mapping[str, Any]) -> Optional[dict[str, str]]:
        """The ``network`` object of an ASGI HTTP scope (client ip through
        trusted proxies, user agent)."""
        client = scope.get("client")
        peer = client[0] if client else None
        forwarded = None
        agent = None
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                agent = value.decode("latin-1")
            elif name == b"x-forwarded-for" and self.trusted_proxies:
                forwarded = value.decode("latin-1") if forwarded is None else forwarded + "," + value.decode("latin-1")
        network: dict[str, str] = {}
        ip = client_ip(peer, forwarded, self.trusted_proxies)
        if ip:
            network["client_ip"] = ip
        if agent:
            network["user_agent"] = self.redactor.scrub_text(agent, 512)
        return network or None


def _warn_plain_fingerprint() -> None:
    global _warned_plain_fingerprint
    if not _warned_plain_fingerprint:
        _warned_plain_fingerprint = True
        logger.warning(
            "mcpsift: no fingerprint_key set, so token fingerprints are plain sha256 and anyone who reads "
            "the events can check a guessed token against them. Set fingerprint_key= (or the "
            "MCPSIFT_FINGERPRINT_KEY environment variable) to a secret to get keyed HMAC-SHA256 fingerprints."
        )


def _trace_reader() -> Any:
    try:
        from opentelemetry import trace as otel_trace
    except ImportError:
        return None
    get_current_span = otel_trace.get_current_span
    unconfigured = (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider)
    # the module global the public getter reads (the getter also reads the
    # environment on every call, a microsecond we spend on every event otherwise)
    watch_global = hasattr(otel_trace, "_TRACER_PROVIDER")

    def read() -> Optional[dict[str, str]]:
        # no tracer provider configured: no span is recorded, nothing to join
        provider = otel_trace._TRACER_PROVIDER if watch_global else otel_trace.get_tracer_provider()
        if provider is None or type(provider) in unconfigured:
            return None
        context = get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}

    return read


try:  # CPython's own SHA-256 (HACL*): the same digest, without OpenSSL's per-call EVP setup
    from _sha2 import sha256 as _sha256_impl  # type: ignore[import-not-found]  # 3.12+
except ImportError:
    try:
        from _sha256 import sha256 as _sha256_impl  # type: ignore[import-not-found,no-redef]  # 3.11
    except ImportError:  # pragma: no cover - interpreters without it
        from hashlib import sha256 as _sha256_impl  # type: ignore[assignment]


def sha256_of(data: bytes) -> str:
    """``"sha256:<hex>"`` of ``data``: :func:`mcpsift.canonical.sha256_ref`, cheaper per call."""
    return "sha256:" + _sha256_impl(data).hexdigest()


def payload_hash(value: Any) -> tuple[int, str]:
    """``(size in bytes, "sha256:<hex>")`` of a JSON-like value's canonical JSON."""
    raw = canonical_json(value)
    return len(raw), sha256_of(raw)
