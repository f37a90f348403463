"""Token detections: audience mismatch, reuse across audiences, expired tokens accepted.

Rules (spec/detections.md, "Authentication and identity"):
``auth.audience_mismatch``, ``auth.token_reuse_across_audiences``,
``auth.expired_token_accepted``.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from mcpsift.alerts import Alert
from mcpsift.uris import normalize_resource

from .base import NO_ALERTS, Detector, Params, token_key, ts

__all__ = ["DETECTORS", "AudienceMismatch", "TokenReuseAcrossAudiences", "ExpiredTokenAccepted"]



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

#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (AudienceMismatch, TokenReuseAcrossAudiences, ExpiredTokenAccepted,)
