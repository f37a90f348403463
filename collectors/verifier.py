"""An auditing wrapper for any MCP SDK ``TokenVerifier``: one ``auth.token`` event per verification.

Wrap the verifier you give the SDK (one line)::

    from mcpsift.collectors.verifier import AuditingTokenVerifier
    server = MCPServer(..., token_verifier=AuditingTokenVerifier(MyJWTVerifier(...), sink,
                                                                 server_resource="https://mcp.example.com/mcp"))

The SDK's bearer authentication calls :meth:`AuditingTokenVerifier.verify_token`
for every request that carries ``Authorization: Bearer``. It calls the wrapped
verifier, returns exactly what that returned (or raises what it raised), and
submits an ``auth.token`` event with:

* ``token``: the fingerprint (keyed HMAC-SHA256 with ``fingerprint_key``, else
  plain ``sha256:`` and a warning once) and the claims read **without
  trusting them** (``jti``, ``aud``, ``scope``, ``iat``, ``exp``, ``iss``, the
  JWS header's ``alg``) -- for an opaque token, what the wrapped verifier
  returned (``AccessToken.scopes``, ``expires_at``, ``resource``, ``claims``),
  and ``alg: "opaque"``. Never the token.
* ``principal``: ``sub``, ``iss``, the client id.
* ``outcome.status``: ``ok`` when the request will be let in, ``denied``
  otherwise, with ``outcome.reason`` one of the spec's words.

Verifiers answer "no" with ``None`` and no reason. The reason is, in order:
what the verifier raised (a PyJWT / joserfc exception class: expired,
audience, signature, issuer, decode errors), what it said with
:func:`deny_reason` (call ``deny_reason("revoked")`` inside your
``verify_token`` before returning None), what the token's own claims show
(malformed, expired by ``exp``, ``aud`` without ``server_resource``, ``iss``
not in ``issuers``, missing ``required_scopes``, ``alg: none``), else
``other``. ``attributes.reason_basis`` says which (``exception``,
``verifier``, ``claims``, ``unknown``).

A token the verifier accepts is still reported ``denied`` when the SDK will
refuse it anyway: expired by ``AccessToken.expires_at`` (the SDK checks that
always), issued for another resource when ``validate_resource=True`` (mirror
of ``AuthSettings.validate_token_resource``), or missing one of
``required_scopes`` (mirror of ``AuthSettings.required_scopes``: a 403).
"""

from __future__ import annotations

import contextvars
import time
from time import perf_counter
from typing import Any, Iterable, Optional

from mcpsift.events import DENIED_REASONS

from .build import EventFactory, current_request, unverified_jwt
from .sink import EventSink

__all__ = ["AuditingTokenVerifier", "deny_reason", "audit_verifier"]


class _Note:
    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: Optional[str] = None


_NOTE: contextvars.ContextVar[Optional[_Note]] = contextvars.ContextVar("mcpsift_deny_reason", default=None)


def deny_reason(reason: str) -> None:
    """Say why the token being verified is refused; call it inside a wrapped
    verifier's ``verify_token`` before returning None. ``reason`` is one of
    ``expired``, ``invalid_signature``, ``wrong_audience``,
    ``insufficient_scope``, ``revoked``, ``malformed``, ``unknown_issuer``,
    ``other`` (anything else is reported as ``other``). Outside an audited
    verification it does nothing."""
    note = _NOTE.get()
    if note is not None:
        note.reason = reason if reason in DENIED_REASONS else "other"


# exception class names (PyJWT, joserfc, authlib, python-jose) -> reason; checked along the MRO
_EXCEPTION_REASONS = (
    ("expired", "expired"),
    ("audience", "wrong_audience"),
    ("signature", "invalid_signature"),
    ("algorithm", "invalid_signature"),
    ("issuer", "unknown_issuer"),
    ("jwkclient", "unknown_issuer"),
    ("keynotfound", "unknown_issuer"),
    ("revoked", "revoked"),
    ("scope", "insufficient_scope"),
    ("decode", "malformed"),
    ("malformed", "malformed"),
    ("missingrequiredclaim", "malformed"),
    ("invalidtoken", "malformed"),
)


def _reason_from_exception(exc: BaseException) -> Optional[str]:
    for cls in type(exc).__mro__:
        name = cls.__name__.lower()
        for needle, reason in _EXCEPTION_REASONS:
            if needle in name:
                return reason
    return None


def _same_resource(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


class AuditingTokenVerifier:
    """Wraps a ``TokenVerifier`` (anything with ``async verify_token(token)``);
    emits ``auth.token`` per call. See the module doc.

    ``issuers``: accepted ``iss`` values (to tell ``unknown_issuer``).
    ``required_scopes``: scopes the server requires (``AuthSettings.required_scopes``).
    ``validate_resource``: the server refuses tokens whose ``AccessToken.resource``
    is not ``server_resource`` (``AuthSettings.validate_token_resource``).
    ``leeway_s``: clock skew allowed when reading ``exp`` from the claims.
    Every other keyword is an :class:`~mcpsift.collectors.build.EventFactory`
    option; ``server_resource`` is the audience a correct token holds.

    Attributes of the wrapped verifier are reachable through this one.
    """

    def __init__(
        self,
        inner: Any,
        sink: EventSink,
        *,
        issuers: Optional[Iterable[str]] = None,
        required_scopes: Optional[Iterable[str]] = None,
        validate_resource: bool = False,
        leeway_s: float = 0.0,
        **options: Any,
    ) -> None:
        if not callable(getattr(inner, "verify_token", None)):
            raise TypeError(
                f"AuditingTokenVerifier wraps a TokenVerifier (with `async verify_token(token)`), got {type(inner).__name__}"
            )
        if isinstance(issuers, str) or isinstance(required_scopes, str):
            raise TypeError("issuers and required_scopes take lists of strings, not one string")
        if not options.get("source_name") and not options.get("server_name"):
            options["source_name"] = "mcp-server"
        self.inner = inner
        self.events = EventFactory(sink, **options)
        self.resource: Optional[str] = options.get("server_resource")
        if validate_resource and not self.resource:
            raise ValueError("validate_resource=True needs server_resource= (the server's canonical resource URI)")
        self.issuers = frozenset(issuers) if issuers is not None else None
        self.required_scopes = tuple(required_scopes or ())
        self.validate_resource = validate_resource
        self.leeway_s = leeway_s

    @property
    def stats(self) -> dict[str, int]:
        return self.events.stats

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes this wrapper does not have
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def verify_token(self, token: str) -> Any:
        """Called by the SDK's bearer authentication for each request with a
        bearer token; answers what the wrapped verifier answers. The event is
        built off the request path."""
        t0 = time.time()
        p0 = perf_counter()
        note = _Note()
        reset = _NOTE.set(note)
        try:
            result = await self.inner.verify_token(token)
        except Exception as exc:
            _NOTE.reset(reset)
            self._capture(token, None, exc, note.reason, t0, p0)
            raise
        _NOTE.reset(reset)
        self._capture(token, result, None, note.reason, t0, p0)
        return result

    # -- the event ------------------------------------------------------------------
    def _capture(
        self, token: Any, result: Any, exc: Optional[BaseException], noted: Optional[str], t0: float, p0: float
    ) -> None:
        try:
            duration_ms = (perf_counter() - p0) * 1000.0
            if not isinstance(token, str):
                token = str(token)
            info = current_request()
            location = "header"
            if info is not None and info.query_token_fingerprint is not None:
                # decided now: the ASGI middleware reports a query token itself unless told here
                if info.query_token_fingerprint == self.events.fingerprint(token):
                    location = "query"
                    info.query_token_reported = True
            self.events.later(self._record, token, result, exc, noted, t0, duration_ms, info, location, self.events.trace())
        except Exception as err:
            self.events.failed("verify_token", err)

    def _record(
        self,
        token: str,
        result: Any,
        exc: Optional[BaseException],
        noted: Optional[str],
        t0: float,
        duration_ms: float,
        info: Any,
        location: str,
        trace: Optional[dict[str, str]],
    ) -> None:
        try:
            status, reason, basis = self._verdict(token, result, exc, noted, t0)
            events = self.events
            event = events.event("auth.token", t0)
            principal, token_part = events.token_parts(token, result)
            if principal is not None:
                event["principal"] = principal
            event["token"] = token_part
            if info is not None:
                if info.session_id:
                    event["session"] = {"id": info.session_id, "transport": info.transport}
                if info.network:
                    event["network"] = info.network
            outcome: dict[str, Any] = {"status": status}
            if reason is not None:
                outcome["reason"] = reason
            if exc is not None:
                outcome["error"] = type(exc).__name__  # the class only: messages may quote the token
            outcome["duration_ms"] = round(duration_ms, 3)
            event["outcome"] = outcome
            if trace is not None:
                event["trace"] = trace
            attributes = {"token_location": location}
            if basis is not None:
                attributes["reason_basis"] = basis
            event["attributes"] = attributes
            events.submit(event)
        except Exception as err:
            self.events.failed("verify_token", err)

    def _verdict(
        self, token: str, result: Any, exc: Optional[BaseException], noted: Optional[str], now: float
    ) -> tuple[str, Optional[str], Optional[str]]:
        if exc is None and result is not None:
            expires_at = getattr(result, "expires_at", None)
            if isinstance(expires_at, (int, float)) and expires_at < int(now):
                return "denied", "expired", "verifier"
            resource = getattr(result, "resource", None)
            if self.validate_resource and not (isinstance(resource, str) and _same_resource(resource, self.resource or "")):
                return "denied", "wrong_audience", "verifier"
            scopes = set(getattr(result, "scopes", None) or ())
            if any(s not in scopes for s in self.required_scopes):
                return "denied", "insufficient_scope", "verifier"
            return "ok", None, None
        if exc is not None:
            reason = _reason_from_exception(exc)
            if reason is not None:
                return "denied", reason, "exception"
        if noted is not None:
            return "denied", noted, "verifier"
        reason = self._reason_from_claims(token, now)
        if reason is not None:
            return "denied", reason, "claims"
        return "denied", "other", "unknown"

    def _reason_from_claims(self, token: str, now: float) -> Optional[str]:
        header, claims = unverified_jwt(token)
        if header is None:
            # three dot-separated parts that do not decode: a broken JWT; anything else is opaque
            return "malformed" if token.count(".") == 2 else None
        if claims is None:
            return "malformed"
        if str(header.get("alg", "")).lower() == "none":
            return "invalid_signature"
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp + self.leeway_s < now:
            return "expired"
        if self.resource:
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
            if audiences is not None and not any(isinstance(a, str) and _same_resource(a, self.resource) for a in audiences):
                return "wrong_audience"
        if self.issuers is not None and claims.get("iss") not in self.issuers:
            return "unknown_issuer"
        if self.required_scopes:
            scope = claims.get("scope")
            granted = set(scope.split()) if isinstance(scope, str) else set(claims.get("scp") or ())
            if any(s not in granted for s in self.required_scopes):
                return "insufficient_scope"
        return None


def audit_verifier(verifier: Any, sink: EventSink, **options: Any) -> Any:
    """Audit ``verifier`` in place and return it: its ``verify_token`` is
    replaced by the auditing one. For frameworks that need the verifier to
    stay an instance of their own class (fastmcp's auth providers); options
    as :class:`AuditingTokenVerifier`."""
    auditing = AuditingTokenVerifier(_Unbound(verifier.verify_token), sink, **options)
    verifier.verify_token = auditing.verify_token
    verifier.mcpsift_audit = auditing
    return verifier


class _Unbound:
    __slots__ = ("verify_token",)

    def __init__(self, verify_token: Any) -> None:
        self.verify_token = verify_token
