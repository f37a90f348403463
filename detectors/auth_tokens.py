"""Token detections: audience mismatch, reuse across audiences, expired, weak,
revoked and leaked (query-string) tokens, principals from another tenant.

Rules (spec/detections.md, "Authentication and identity"):
``auth.audience_mismatch``, ``auth.token_reuse_across_audiences``,
``auth.expired_token_accepted``, ``auth.weak_token_accepted``,
``auth.revoked_token_used``, ``auth.token_in_query``, ``auth.cross_tenant``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Optional

from pydantic import Field

from mcpsift.alerts import Alert
from mcpsift.events import EVENT_TYPES
from mcpsift.uris import normalize_resource

from .base import NO_ALERTS, Detector, Params, token_key, ts

__all__ = [
    "DETECTORS",
    "AudienceMismatch",
    "TokenReuseAcrossAudiences",
    "ExpiredTokenAccepted",
    "WeakTokenAccepted",
    "RevokedTokenUsed",
    "TokenInQuery",
    "CrossTenant",
]



def _accepted_token(ev: Any) -> bool:
    return ev.token is not None and ev.outcome is not None and ev.outcome.status == "ok"


def _token_label(ev: Any) -> str:
    token = ev.token
    if token.jti:
        return f"jti {token.jti}"
    return token.fingerprint or "(unidentified token)"


class AudienceMismatch(Detector):
    """A server accepted a token whose audience does not name it (RFC 8707)."""

    rule_ids = ("auth.audience_mismatch",)
    severities = {"auth.audience_mismatch": "high"}
    event_types = frozenset({"auth.token"})
    key_kind = None
    outcomes = {"auth.token": frozenset({"ok"})}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        if not _accepted_token(ev) or ev.server is None or not ev.server.resource:
            return state, NO_ALERTS
        audience = ev.token.audience
        # an absent or empty audience is auth.weak_token_accepted's case
        if not audience:
            return state, NO_ALERTS
        resource = normalize_resource(ev.server.resource)
        if any(normalize_resource(a) == resource for a in audience):
            return state, NO_ALERTS
        return state, [
            self.alert(
                "auth.audience_mismatch",
                ev,
                identity=(token_key(ev) or ev.event_id, resource),
                title="Server accepted a token minted for another audience",
                description=(
                    f"{ev.server.name or resource} ({resource}) accepted token {_token_label(ev)} "
                    f"whose audience is {', '.join(audience)}; the token was not issued for this server "
                    f"(RFC 8707 audience validation failed)."
                ),
                attack=["T1550.001"],
            )
        ]


class TokenReuseParams(Params):
    #: window when the token's lifetime is unknown, in seconds
    default_window_s: float = Field(default=3600.0, gt=0)


class TokenReuseAcrossAudiences(Detector):
    """One token presented to two or more distinct servers within its lifetime.

    "The same token" is the same fingerprint *or* the same issuer+jti (two
    gateways with different fingerprint keys still agree on the jti; a producer
    that cannot read the jti still agrees on the fingerprint). One state key
    cannot hold both identities, so the state is keyed by the token's subject
    (tokens of one subject are few at a time) and each use records both; an
    event with no subject falls back to the token's own key.
    """

    rule_ids = ("auth.token_reuse_across_audiences",)
    severities = {"auth.token_reuse_across_audiences": "high"}
    event_types = frozenset({"auth.token"})
    key_kind = "principal"
    Params = TokenReuseParams
    #: uses remembered per key; the oldest go first (bounds a busy service account)
    max_uses = 512

    def key(self, ev: Any) -> Optional[str]:
        # spec: "distinct server.resource values". An event that names its server
        # only by name cannot be told apart from (or matched to) a resource URI:
        # counting "name:<n>" as a resource made one server look like two when one
        # producer sent the resource and another only the name. Name-only
        # producers get a resource from settings.servers in the enrich stage.
        if ev.server is None or not ev.server.resource or ev.token is None:
            return None
        subject = ev.principal.subject if ev.principal is not None else None
        if subject:
            return f"{ev.tenant}|sub|{_issuer(ev)}|{subject}"
        return token_key(ev)

    def state_ttl_s(self) -> float:
        # longer than any window, so a token's uses stay comparable while it lives
        return max(self.params.default_window_s, 24 * 3600.0)

    def _window(self, ev: Any) -> float:
        token = ev.token
        if token.issued_at is not None and token.expires_at is not None and token.expires_at > token.issued_at:
            return (token.expires_at - token.issued_at).total_seconds()
        return self.params_for(ev.tenant).default_window_s

    def initial_state(self) -> Any:
        # uses: [[fingerprint, "issuer|jti", resource, last time, first event id, window], ...]
        return {"uses": []}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        resource = normalize_resource(ev.server.resource)
        now = ts(ev.time)
        token = ev.token
        fingerprint = token.fingerprint or ""
        jti = f"{_issuer(ev)}|{token.jti}" if token.jti else ""
        uses: list[list[Any]] = [u for u in state["uses"] if now - u[3] <= u[5]]
        alerts: list[Alert] = []
        mine = None
        reported: set[str] = set()
        for use in uses:
            same_token = (fingerprint and use[0] == fingerprint) or (jti and use[1] == jti)
            if not same_token:
                continue
            if use[2] == resource:
                mine = use
                continue
            if use[2] in reported or abs(now - use[3]) > max(use[5], self._window(ev)):
                continue
            reported.add(use[2])
            pair = sorted((use[2], resource))
            alerts.append(
                self.alert(
                    "auth.token_reuse_across_audiences",
                    ev,
                    identity=(use[0] or use[1], *pair),
                    title="One token presented to several MCP servers",
                    description=(
                        f"Token {_token_label(ev)} of "
                        f"{ev.principal.subject if ev.principal and ev.principal.subject else 'an unknown subject'} "
                        f"was presented to {use[2]} and then to {resource} "
                        f"({abs(now - use[3]):.0f} s apart, outcome at {resource}: "
                        f"{ev.outcome.status if ev.outcome else 'unknown'}): "
                        f"a token minted for one server replayed at another."
                    ),
                    event_ids=[use[4], ev.event_id],
                    attack=["T1550.001"],
                )
            )
        if mine is None:
            uses.append([fingerprint, jti, resource, now, ev.event_id, self._window(ev)])
            if len(uses) > self.max_uses:
                del uses[0]
        else:
            # the latest use keeps the entry alive; the first event stays the evidence
            mine[3] = max(mine[3], now)
            mine[0] = mine[0] or fingerprint
            mine[1] = mine[1] or jti
        state["uses"] = uses
        return state, alerts


def _issuer(ev: Any) -> str:
    return ev.token.issuer or (ev.principal.issuer if ev.principal is not None else None) or ""


class ExpiredTokenParams(Params):
    #: clock skew tolerated, in seconds
    skew_s: float = Field(default=60.0, ge=0)


class ExpiredTokenAccepted(Detector):
    """A server accepted a token that had expired (beyond the clock skew)."""

    rule_ids = ("auth.expired_token_accepted",)
    severities = {"auth.expired_token_accepted": "high"}
    event_types = frozenset({"auth.token"})
    key_kind = None
    outcomes = {"auth.token": frozenset({"ok"})}
    Params = ExpiredTokenParams

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        if not _accepted_token(ev) or ev.token.expires_at is None:
            return state, NO_ALERTS
        late = (ev.time - ev.token.expires_at).total_seconds()
        if late <= self.params_for(ev.tenant).skew_s:
            return state, NO_ALERTS
        where = ev.server.resource or ev.server.name if ev.server is not None else None
        return state, [
            self.alert(
                "auth.expired_token_accepted",
                ev,
                identity=(token_key(ev) or ev.event_id, where or ""),
                title="Expired token accepted",
                description=(
                    f"{where or 'A server'} accepted token {_token_label(ev)} that expired at "
                    f"{ev.token.expires_at.isoformat()}, {late:.0f} s before it was presented "
                    f"(tolerated skew {self.params_for(ev.tenant).skew_s:.0f} s)."
                ),
            )
        ]



def _server_label(ev: Any) -> str:
    """The server an event concerns, as an analyst knows it: its resource, else its name."""
    server = ev.server
    if server is None:
        return ""
    return server.resource or server.name or ""


class WeakTokenAccepted(Detector):
    """A server accepted a token that proves little: unsigned (alg ``none`` or no alg
    on a JWT), never expiring (no ``expires_at``) or valid anywhere (empty audience).

    Opaque tokens carry ``alg = "opaque"`` (spec/events.md) and are validated by
    introspection, so only a missing audience or expiry counts against them.
    """

    rule_ids = ("auth.weak_token_accepted",)
    severities = {"auth.weak_token_accepted": "medium"}
    event_types = frozenset({"auth.token"})
    key_kind = None
    outcomes = {"auth.token": frozenset({"ok"})}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        token = ev.token
        outcome = ev.outcome
        if token is None or outcome is None or outcome.status != "ok":
            return state, NO_ALERTS
        alg = token.alg
        unsigned = not alg or alg.lower() == "none"
        if not unsigned and token.expires_at is not None and token.audience:
            return state, NO_ALERTS  # the common case: a signed, expiring, audience-bound token
        weaknesses: list[str] = []
        if not alg:
            weaknesses.append('no alg (a JWT whose signature algorithm was not reported; opaque tokens carry "opaque")')
        elif unsigned:
            weaknesses.append(f"alg '{alg}' (an unsigned JWT)")
        if token.expires_at is None:
            weaknesses.append("no expires_at (a token that never expires)")
        if token.audience is None:
            weaknesses.append("no audience (valid at any server)")
        elif not token.audience:
            weaknesses.append("an empty audience (valid at any server)")
        where = _server_label(ev)
        return state, [
            self.alert(
                "auth.weak_token_accepted",
                ev,
                identity=(token_key(ev) or ev.event_id, where),
                title="Server accepted a weak token",
                description=(
                    f"{where or 'A server'} accepted token {_token_label(ev)} with "
                    f"{'; '.join(weaknesses)}."
                ),
                attack=["T1550.001"],
            )
        ]


class RevokedTokenParams(Params):
    #: seconds a revocation is remembered when the revoked token's expiry is unknown
    memory_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: a revocation whose token expiry is known is remembered until that expiry plus this skew, in seconds
    skew_s: float = Field(default=60.0, ge=0)


class RevokedTokenUsed(Detector):
    """A token accepted after an ``auth.token_revoked`` for its fingerprint or jti.

    A revocation may name the token by fingerprint, by jti or both, and often
    without the issuer; the uses name it by both. One state key cannot hold two
    identities, so the state is the tenant's revocation list (revocations are
    rare): ``{fingerprint: ...}`` and ``{jti: ...}``, each looked up in O(1).
    Only accepted uses (``outcome.status = ok``) are looked at: a rejected use
    is the revocation working.
    """

    rule_ids = ("auth.revoked_token_used",)
    severities = {"auth.revoked_token_used": "high"}
    event_types = frozenset({"auth.token", "auth.token_revoked"})
    key_kind = "tenant"
    outcomes = {"auth.token": frozenset({"ok"})}
    Params = RevokedTokenParams

    def key(self, ev: Any) -> Optional[str]:
        if ev.type == "auth.token":
            outcome = ev.outcome
            if outcome is None or outcome.status != "ok":
                return None
        return ev.tenant

    def state_ttl_s(self) -> float:
        return max(p.memory_s for p in (self.params, *self.tenant_params.values()))

    def initial_state(self) -> Any:
        # fp: {fingerprint: [revoked at, event id, remembered until]}
        # jti: {jti: [revoked at, event id, remembered until, issuer or ""]}
        return {"fp": {}, "jti": {}}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        fps: dict[str, list[Any]] = state["fp"]
        jtis: dict[str, list[Any]] = state["jti"]
        token = ev.token
        if ev.type == "auth.token_revoked":
            return self._revoked(state, ev), NO_ALERTS
        if not fps and not jtis:
            return state, NO_ALERTS  # the common case: nothing revoked lately
        now = ts(ev.time)
        hits: list[tuple[list[Any], str]] = []
        if token.fingerprint:
            rec = fps.get(token.fingerprint)
            if rec is not None and rec[0] < now <= rec[2]:
                hits.append((rec, f"fingerprint {token.fingerprint}"))
        if token.jti:
            rec = jtis.get(token.jti)
            issuer = _issuer(ev)
            if rec is not None and rec[0] < now <= rec[2] and (not rec[3] or not issuer or rec[3] == issuer):
                hits.append((rec, f"jti {token.jti}"))
        if not hits:
            return state, NO_ALERTS
        rec, how = min(hits, key=lambda h: (h[0][0], h[0][1]))
        where = _server_label(ev)
        revoked_at = _dt.datetime.fromtimestamp(rec[0], _dt.timezone.utc).isoformat().replace("+00:00", "Z")
        return state, [
            self.alert(
                "auth.revoked_token_used",
                ev,
                identity=(token_key(ev) or token.fingerprint or ev.event_id, where),
                title="Revoked token accepted",
                description=(
                    f"{where or 'A server'} accepted token {_token_label(ev)} of "
                    f"{ev.principal.subject if ev.principal and ev.principal.subject else 'an unknown subject'} "
                    f"{now - rec[0]:.0f} s after it was revoked at {revoked_at} (revocation event {rec[1]}, "
                    f"matched by {how}): the server does not check revocation."
                ),
                event_ids=[rec[1], ev.event_id],
                attack=["T1550.001"],
            )
        ]

    def _revoked(self, state: Any, ev: Any) -> Any:
        params = self.params_for(ev.tenant)
        now = ts(ev.time)
        token = ev.token
        if token.expires_at is not None:
            until = ts(token.expires_at) + params.skew_s
        else:
            until = now + params.memory_s
        # forget revocations of tokens that can no longer be used (revocations are rare: cheap)
        for table in (state["fp"], state["jti"]):
            for stale in [k for k, rec in table.items() if rec[2] < now]:
                del table[stale]
        if until < now:
            return state  # revoked after it expired: nothing left to watch
        if token.fingerprint:
            known = state["fp"].get(token.fingerprint)
            if known is None or known[0] > now:
                state["fp"][token.fingerprint] = [now, ev.event_id, until]
        if token.jti:
            known = state["jti"].get(token.jti)
            if known is None or known[0] > now:
                state["jti"][token.jti] = [now, ev.event_id, until, _issuer(ev)]
        return state


class TokenInQuery(Detector):
    """An access token presented in the URI query string (forbidden by the MCP
    authorization spec: URLs end up in logs, proxies and browser history)."""

    rule_ids = ("auth.token_in_query",)
    severities = {"auth.token_in_query": "medium"}
    event_types = frozenset({"auth.token"})
    key_kind = None

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        attributes = ev.attributes
        if not attributes or attributes.get("token_location") != "query":
            return state, NO_ALERTS
        where = _server_label(ev)
        status = ev.outcome.status if ev.outcome is not None and ev.outcome.status else "unknown"
        client = ev.principal.client_id if ev.principal is not None and ev.principal.client_id else None
        ip = ev.network.client_ip if ev.network is not None and ev.network.client_ip else None
        by = ", ".join(x for x in (f"client {client}" if client else "", f"ip {ip}" if ip else "") if x)
        return state, [
            self.alert(
                "auth.token_in_query",
                ev,
                identity=(token_key(ev) or ev.event_id, where),
                title="Access token sent in the URL query string",
                description=(
                    f"Token {_token_label(ev)} was presented to {where or 'a server'} in the URI query string"
                    f"{f' ({by})' if by else ''}, outcome {status}: the MCP authorization spec forbids tokens "
                    f"in the query; the token may be in access logs and proxies and should be revoked."
                ),
                attack=["T1552"],
            )
        ]


_MCP_TYPES = frozenset(t for t in EVENT_TYPES if t.startswith("mcp."))


class CrossTenant(Detector):
    """An accepted token or an MCP event of a principal whose home tenant
    (``principal.tenant``) is not the event's tenant.

    State per (tenant, home tenant, principal): the servers already reported,
    so one foreign principal at one server is one alert, not one per call.
    """

    rule_ids = ("auth.cross_tenant",)
    severities = {"auth.cross_tenant": "high"}
    event_types = frozenset({"auth.token"}) | _MCP_TYPES
    key_kind = "principal"
    outcomes = {"auth.token": frozenset({"ok"})}

    def key(self, ev: Any) -> Optional[str]:
        principal = ev.principal
        if principal is None:
            return None
        home = principal.tenant
        if not home or home == ev.tenant:
            return None  # the common case: two attribute reads and a comparison
        if ev.type == "auth.token":
            outcome = ev.outcome
            if outcome is None or outcome.status != "ok":
                return None
        return f"{ev.tenant}|{home}|{principal.subject or principal.client_id or ''}"

    def initial_state(self) -> Any:
        return {"servers": []}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        where = _server_label(ev)
        if where in state["servers"]:
            return state, NO_ALERTS
        state["servers"].append(where)
        principal = ev.principal
        who = principal.subject or principal.client_id or "an unidentified principal"
        what = "had a token accepted at" if ev.type == "auth.token" else f"sent {ev.type} to"
        return state, [
            self.alert(
                "auth.cross_tenant",
                ev,
                identity=(principal.tenant, principal.subject or principal.client_id or "", where),
                title="Principal of another tenant acting in this tenant",
                description=(
                    f"{who} (home tenant '{principal.tenant}') {what} {where or 'a server'} "
                    f"in tenant '{ev.tenant}'."
                ),
                attack=["T1078"],
            )
        ]


#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (
    AudienceMismatch,
    TokenReuseAcrossAudiences,
    ExpiredTokenAccepted,
    WeakTokenAccepted,
    RevokedTokenUsed,
    TokenInQuery,
    CrossTenant,
)
