"""Client and identity detections (spec/detections.md, "Authentication and identity").

Rules: ``auth.failure_burst``, ``auth.dcr_flood``, ``auth.cimd_mismatch``,
``auth.new_client``, ``auth.scope_escalation``, ``auth.pkce_missing``.

The counting rules (failure bursts, registration floods, repeated scope
denials) share one notion of a *burst*: it starts when the sliding window
(``window_s``, ends included) first holds ``threshold`` qualifying events, and
lasts as long as qualifying events keep coming less than ``window_s`` apart.
A burst is one incident and one alert, identified by the entity and the time
of the burst's first event, so a continuing attack does not raise an alert per
event and the same evidence always yields the same alert id.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Optional
from urllib.parse import urlsplit

from pydantic import Field

from mcpsift.alerts import Alert
from mcpsift.events import EVENT_TYPES

from .base import NO_ALERTS, Detector, Params, token_key, ts

__all__ = [
    "DETECTORS",
    "FailureBurst",
    "DcrFlood",
    "CimdMismatch",
    "NewClient",
    "ScopeEscalation",
    "PkceMissing",
]


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _burst_state() -> dict[str, Any]:
    # w: [[time, event id, detail...], ...] of the qualifying events inside the window
    # on: start time of the burst in progress (None when there is none); last: time of the last event
    return {"w": [], "on": None, "last": None, "n": 0}


def _feed_burst(burst: dict[str, Any], item: list[Any], threshold: int, window_s: float) -> Optional[list[list[Any]]]:
    """Add one qualifying event (``item[0]`` is its time) to a burst tracker.

    Returns the window's events when this event starts a burst, else None.
    Events arrive in event-time order (the pipeline reorders them), so the
    window is a list pruned at its head.
    """
    now = item[0]
    if burst["on"] is not None:
        if now - burst["last"] <= window_s:
            burst["last"] = now
            burst["n"] += 1
            return None  # the burst goes on: same incident, no new alert
        burst["on"] = None  # quiet for a whole window: that burst is over
    window = [e for e in burst["w"] if now - e[0] <= window_s]
    window.append(item)
    burst["last"] = now
    if len(window) >= threshold:
        burst["on"] = window[0][0]
        burst["n"] = len(window)
        burst["w"] = []
        return window
    burst["w"] = window
    return None


def _max_param(detector: Detector, name: str) -> float:
    return max(getattr(p, name) for p in (detector.params, *detector.tenant_params.values()))


def _counts(values: list[str]) -> str:
    seen: dict[str, int] = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    return ", ".join(f"{v} ×{n}" if n > 1 else v for v, n in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0])))


# --------------------------------------------------------------------------
# auth.failure_burst


class FailureBurstParams(Params):
    #: failed authentications (``auth.token`` denied, ``auth.challenge``) that make a burst
    threshold: int = Field(default=20, ge=1)
    #: within this many seconds
    window_s: float = Field(default=60.0, gt=0)


class _BurstDetector(Detector):
    """A detector whose state is a burst tracker (:func:`_feed_burst`) over ``window_s``."""

    def state_ttl_s(self) -> float:
        return max(2 * _max_param(self, "window_s"), 3600.0)

    def initial_state(self) -> Any:
        return _burst_state()


class FailureBurst(_BurstDetector):
    """Many failed authentications from one client ip (or one client_id without an ip)."""

    rule_ids = ("auth.failure_burst",)
    severities = {"auth.failure_burst": "medium"}
    event_types = frozenset({"auth.token", "auth.challenge"})
    key_kind = "client"
    outcomes = {"auth.token": frozenset({"denied"})}
    Params = FailureBurstParams

    def key(self, ev: Any) -> Optional[str]:
        if ev.type == "auth.token":
            outcome = ev.outcome
            if outcome is None or outcome.status != "denied":
                return None  # the common case: an accepted token
        network = ev.network
        ip = network.client_ip if network is not None else None
        if ip:
            return f"{ev.tenant}|ip|{ip}"
        principal = ev.principal
        client_id = principal.client_id if principal is not None else None
        if client_id:
            return f"{ev.tenant}|client|{client_id}"
        return None

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        params = self.params_for(ev.tenant)
        if ev.type == "auth.challenge":
            kind = "auth.challenge"
        else:
            kind = f"auth.token denied ({ev.outcome.reason or 'no reason'})"
        server = ev.server
        where = (server.resource or server.name or "") if server is not None else ""
        window = _feed_burst(state, [ts(ev.time), ev.event_id, kind, where], params.threshold, params.window_s)
        if window is None:
            return state, NO_ALERTS
        network = ev.network
        ip = network.client_ip if network is not None else None
        source = f"ip {ip}" if ip else f"client {ev.principal.client_id}"
        start, end = window[0][0], window[-1][0]
        servers = sorted({e[3] for e in window if e[3]})
        return state, [
            self.alert(
                "auth.failure_burst",
                ev,
                identity=(source, _iso(start)),
                title=f"Burst of failed authentications from {source}",
                description=(
                    f"{len(window)} failed authentications from {source} within {end - start:.1f} s "
                    f"({_iso(start)} to {_iso(end)}; threshold {params.threshold} in {params.window_s:.0f} s): "
                    f"{_counts([e[2] for e in window])}"
                    f"{'; servers: ' + ', '.join(servers) if servers else ''}. "
                    f"Later failures less than {params.window_s:.0f} s apart belong to this burst."
                ),
                event_ids=[e[1] for e in window],
                attack=["T1110"],
            )
        ]


# --------------------------------------------------------------------------
# auth.dcr_flood


class DcrFloodParams(Params):
    #: dynamic client registrations that make a flood
    threshold: int = Field(default=10, ge=1)
    #: within this many seconds
    window_s: float = Field(default=600.0, gt=0)


class DcrFlood(_BurstDetector):
    """Many dynamic client registrations (RFC 7591) from one client ip."""

    rule_ids = ("auth.dcr_flood",)
    severities = {"auth.dcr_flood": "medium"}
    event_types = frozenset({"auth.client_registered"})
    key_kind = "client"
    Params = DcrFloodParams

    def key(self, ev: Any) -> Optional[str]:
        network = ev.network
        ip = network.client_ip if network is not None else None
        return f"{ev.tenant}|{ip}" if ip else None

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        params = self.params_for(ev.tenant)
        attributes = ev.attributes or {}
        name = attributes.get("client_name")
        item = [ts(ev.time), ev.event_id, ev.principal.client_id, name if isinstance(name, str) else ""]
        window = _feed_burst(state, item, params.threshold, params.window_s)
        if window is None:
            return state, NO_ALERTS
        ip = ev.network.client_ip
        start, end = window[0][0], window[-1][0]
        clients = [e[2] for e in window]
        names = sorted({e[3] for e in window if e[3]})
        shown = ", ".join(clients[:5]) + (f" and {len(clients) - 5} more" if len(clients) > 5 else "")
        return state, [
            self.alert(
                "auth.dcr_flood",
                ev,
                identity=(ip, _iso(start)),
                title=f"Flood of dynamic client registrations from {ip}",
                description=(
                    f"{len(window)} dynamic client registrations from ip {ip} within {end - start:.0f} s "
                    f"({_iso(start)} to {_iso(end)}; threshold {params.threshold} in {params.window_s:.0f} s): "
                    f"client ids {shown}"
                    f"{'; client names: ' + ', '.join(repr(n) for n in names) if names else ''}."
                ),
                event_ids=[e[1] for e in window],
                attack=["T1136"],
            )
        ]


# --------------------------------------------------------------------------
# auth.cimd_mismatch

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _host(uri: str) -> Optional[str]:
    try:
        return urlsplit(uri.strip()).hostname
    except ValueError:
        return None


def _redirect_uris(attributes: Optional[dict[str, Any]]) -> Optional[list[str]]:
    if not attributes:
        return None
    uris = attributes.get("redirect_uris")
    if not isinstance(uris, list):
        return None
    return [u for u in uris if isinstance(u, str)]


class CimdMismatchParams(Params):
    #: event-time seconds a client's first-seen document is remembered after its last fetch
    memory_s: float = Field(default=90 * 24 * 3600.0, gt=0)


class CimdMismatch(Detector):
    """A Client ID Metadata Document that does not hold together, or that changed.

    Findings on one fetch: the client_id URL is not ``https``; a redirect URI's
    host is neither the client_id's host nor loopback; the ``document_hash`` or
    the set of ``redirect_uris`` differs from the first fetch of that
    client_id. All findings of one document version are one alert, identified
    by the client_id and that version (its hash, else its redirect URIs), so a
    document fetched again unchanged never alerts twice.
    """

    rule_ids = ("auth.cimd_mismatch",)
    severities = {"auth.cimd_mismatch": "high"}
    event_types = frozenset({"auth.client_metadata"})
    key_kind = "client"
    Params = CimdMismatchParams

    def key(self, ev: Any) -> Optional[str]:
        return f"{ev.tenant}|{ev.principal.client_id}"

    def state_ttl_s(self) -> float:
        return _max_param(self, "memory_s")

    def initial_state(self) -> Any:
        # first: {"hash": ..., "uris": sorted list or None, "event": id} of the first fetch
        # alerted: document versions already reported
        return {"first": None, "alerted": []}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        client_id: str = ev.principal.client_id
        attributes = ev.attributes
        uris = _redirect_uris(attributes)
        doc_hash = attributes.get("document_hash") if attributes else None
        if not isinstance(doc_hash, str) or not doc_hash:
            doc_hash = None
        findings: list[str] = []

        try:
            parts = urlsplit(client_id.strip())
            scheme, client_host = parts.scheme.lower(), parts.hostname
        except ValueError:
            scheme, client_host = "", None
        if scheme != "https":
            findings.append(
                f"the client_id {client_id} is not an https URL (scheme {scheme or 'missing'})"
            )
        if uris:
            foreign = [u for u in uris if (h := _host(u)) and h != client_host and h not in _LOOPBACK_HOSTS]
            if foreign:
                hosts = sorted({_host(u) or "" for u in foreign})
                findings.append(
                    f"redirect URI(s) {', '.join(foreign)} point at host(s) {', '.join(hosts)}, neither the "
                    f"client_id's host {client_host or '(none)'} nor loopback"
                )

        first = state["first"]
        version_uris = sorted(set(uris)) if uris is not None else None
        if first is None:
            state["first"] = {"hash": doc_hash, "uris": version_uris, "event": ev.event_id}
        else:
            if first["hash"] is None:
                first["hash"] = doc_hash  # the first fetch did not say; this one is the reference
            elif doc_hash is not None and doc_hash != first["hash"]:
                findings.append(
                    f"document_hash changed to {doc_hash} from {first['hash']} (first seen in event {first['event']})"
                )
            if first["uris"] is None:
                first["uris"] = version_uris
            elif version_uris is not None and version_uris != first["uris"]:
                added = sorted(set(version_uris) - set(first["uris"]))
                removed = sorted(set(first["uris"]) - set(version_uris))
                change = "; ".join(
                    x
                    for x in (
                        f"added {', '.join(added)}" if added else "",
                        f"removed {', '.join(removed)}" if removed else "",
                    )
                    if x
                )
                findings.append(
                    f"redirect_uris differ from the first fetch (event {first['event']}): {change}"
                )
        if not findings:
            return state, NO_ALERTS
        version = doc_hash or ("uris:" + "|".join(version_uris or []))
        if version in state["alerted"]:
            return state, NO_ALERTS  # the same document again: already reported
        state["alerted"].append(version)
        evidence = [ev.event_id] if first is None or first["event"] == ev.event_id else [first["event"], ev.event_id]
        return state, [
            self.alert(
                "auth.cimd_mismatch",
                ev,
                identity=(client_id, version),
                title="Client ID Metadata Document mismatch",
                description=f"Client metadata document of {client_id}: " + "; ".join(findings) + ".",
                event_ids=evidence,
                attack=["T1557"],
            )
        ]


# --------------------------------------------------------------------------
# auth.new_client


class NewClient(Detector):
    """The first event (per tenant) naming a ``principal.client_id``.

    State per client_id: ``{tenant: 1}`` for each tenant it has been seen in.
    The key is the client_id itself (no string to build on the common path:
    this detector reads almost every event); the tenant is looked up inside.
    Clients are few, so their state is kept for five years of event time
    after the client's last event: effectively forever ("first ever" stays
    first), yet finite, so a runner's state does not outlive every horizon.
    """

    rule_ids = ("auth.new_client",)
    severities = {"auth.new_client": "low"}
    event_types = frozenset(EVENT_TYPES)  # any event may name a client
    key_kind = "client"

    def key(self, ev: Any) -> Optional[str]:
        principal = ev.principal
        if principal is None:
            return None
        return principal.client_id or None

    def state_ttl_s(self) -> float:
        return 5 * 365 * 24 * 3600.0

    def initial_state(self) -> Any:
        return {}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        tenant = ev.tenant
        if tenant in state:
            return state, NO_ALERTS  # the common case: a known client
        state[tenant] = 1
        principal = ev.principal
        client_id = principal.client_id
        details = [f"first seen in {ev.type}"]
        if principal.subject:
            details.append(f"subject {principal.subject}")
        attributes = ev.attributes
        if attributes:
            name = attributes.get("client_name")
            if isinstance(name, str) and name:
                details.append(f"client name {name!r}")
            info = attributes.get("client_info")
            if isinstance(info, dict) and info.get("name"):
                details.append(f"client info {info.get('name')} {info.get('version') or ''}".rstrip())
        if ev.network is not None and ev.network.client_ip:
            details.append(f"ip {ev.network.client_ip}")
        if ev.server is not None and (ev.server.resource or ev.server.name):
            details.append(f"server {ev.server.resource or ev.server.name}")
        return state, [
            self.alert(
                "auth.new_client",
                ev,
                identity=(client_id,),
                title="New OAuth client",
                description=f"First event naming client {client_id} in tenant '{ev.tenant}': {', '.join(details)}.",
            )
        ]


# --------------------------------------------------------------------------
# auth.scope_escalation


class ScopeEscalationParams(Params):
    #: tool calls denied for insufficient_scope, by one principal, that make an escalation attempt
    denied_threshold: int = Field(default=3, ge=1)
    #: within this many seconds
    denied_window_s: float = Field(default=600.0, gt=0)
    #: a scope is new for a (subject, client_id) pair when no token of the pair carried it in this many seconds
    history_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: earlier tokens a pair needs before a new scope counts
    min_tokens: int = Field(default=20, ge=1)


#: distinct tokens remembered per pair to tell a new token from one presented again
_KNOWN_TOKENS = 64
#: a remembered token not seen for this long is forgotten (token lifetimes are shorter)
_KNOWN_TOKEN_S = 24 * 3600.0


class ScopeEscalation(Detector):
    """A principal probing for scopes it lacks, or a token with a scope its
    (subject, client_id) pair has not carried lately.

    State per (tenant, subject) (per client_id when a denied call names no
    subject): a burst tracker of ``insufficient_scope`` denials, and per
    client_id the pair's token history: how many distinct tokens, when each
    scope was last carried, and the recent tokens (by fingerprint and by
    issuer+jti) so that a token presented again is not a new token. Tokens are
    read from ``auth.token_issued`` and accepted ``auth.token`` events.
    """

    rule_ids = ("auth.scope_escalation",)
    severities = {"auth.scope_escalation": "medium"}
    event_types = frozenset({"mcp.tool_call", "auth.token", "auth.token_issued"})
    key_kind = "principal"
    outcomes = {"mcp.tool_call": frozenset({"denied"}), "auth.token": frozenset({"ok"})}
    Params = ScopeEscalationParams

    def key(self, ev: Any) -> Optional[str]:
        kind = ev.type
        outcome = ev.outcome
        if kind == "mcp.tool_call":
            if outcome is None or outcome.status != "denied" or outcome.reason != "insufficient_scope":
                return None  # the common case: a call that went through
            principal = ev.principal
            if principal is None:
                return None
            if principal.subject:
                return f"{ev.tenant}|s|{principal.subject}"
            return f"{ev.tenant}|c|{principal.client_id}" if principal.client_id else None
        if kind == "auth.token" and (outcome is None or outcome.status != "ok"):
            return None
        principal = ev.principal
        if principal is None or not principal.subject or ev.token is None or ev.token.scopes is None:
            return None
        return f"{ev.tenant}|s|{principal.subject}"

    def state_ttl_s(self) -> float:
        return max(_max_param(self, "history_s"), _max_param(self, "denied_window_s"))

    def initial_state(self) -> Any:
        # deny: burst tracker; pairs: {client_id: {"n": tokens, "scopes": {scope: last time}, "known": {id: last time}}}
        return {"deny": None, "pairs": {}}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        if ev.type == "mcp.tool_call":
            return state, self._denied(state, ev)
        return state, self._token(state, ev)

    def _denied(self, state: Any, ev: Any) -> list[Alert]:
        params = self.params_for(ev.tenant)
        if state["deny"] is None:
            state["deny"] = _burst_state()
        item = [ts(ev.time), ev.event_id, ev.tool.name]
        window = _feed_burst(state["deny"], item, params.denied_threshold, params.denied_window_s)
        if window is None:
            return NO_ALERTS
        principal = ev.principal
        who = principal.subject or f"client {principal.client_id}"
        start, end = window[0][0], window[-1][0]
        return [
            self.alert(
                "auth.scope_escalation",
                ev,
                identity=("denied", who, _iso(start)),
                title=f"Repeated insufficient_scope denials for {who}",
                description=(
                    f"{len(window)} tool calls by {who} were denied for insufficient_scope within "
                    f"{end - start:.0f} s ({_iso(start)} to {_iso(end)}; threshold {params.denied_threshold} in "
                    f"{params.denied_window_s:.0f} s): tools {_counts([e[2] for e in window])}."
                ),
                event_ids=[e[1] for e in window],
                attack=["T1068"],
            )
        ]

    def _token(self, state: Any, ev: Any) -> list[Alert]:
        principal = ev.principal
        token = ev.token
        client_id = principal.client_id or ""
        pair = state["pairs"].get(client_id)
        if pair is None:
            pair = state["pairs"][client_id] = {"n": 0, "scopes": {}, "known": {}}
        known: dict[str, float] = pair["known"]
        fingerprint = token.fingerprint
        if fingerprint and fingerprint in known:
            # the common case: a token already counted, presented again. Its
            # scopes count as carried from when it was first seen: tokens live
            # hours, the history days.
            return NO_ALERTS
        jti = f"{token.issuer or principal.issuer or ''}|{token.jti}" if token.jti else None
        if jti is not None and jti in known:
            if fingerprint:
                known[fingerprint] = known[jti]  # the same token, seen by another producer
            return NO_ALERTS
        now = ts(ev.time)
        ids = [i for i in (fingerprint, jti) if i]
        scopes: dict[str, float] = pair["scopes"]
        params = self.params_for(ev.tenant)
        new: list[str] = []
        earlier = pair["n"]
        if earlier >= params.min_tokens:
            horizon = now - params.history_s
            new = sorted({s for s in token.scopes if scopes.get(s, float("-inf")) < horizon})
        carried_before = sorted(s for s, t in scopes.items() if t >= now - params.history_s)
        for scope in token.scopes:
            scopes[scope] = now
        pair["n"] = earlier + 1
        for i in ids:
            known[i] = now
        if len(known) > _KNOWN_TOKENS:
            for stale in sorted(known, key=lambda k: (known[k], k))[: len(known) - _KNOWN_TOKENS]:
                del known[stale]
        for stale in [s for s, t in scopes.items() if t < now - params.history_s]:
            del scopes[stale]
        if not new:
            return NO_ALERTS
        label = token.jti and f"jti {token.jti}" or token.fingerprint or "(unidentified token)"
        return [
            self.alert(
                "auth.scope_escalation",
                ev,
                identity=("scope", principal.subject, client_id, token_key(ev) or ev.event_id, *new),
                title=f"Token with a scope new for {principal.subject}",
                description=(
                    f"Token {label} ({ev.type}) for {principal.subject} via client {client_id or '(none)'} carries "
                    f"scope(s) {', '.join(new)} that none of this pair's tokens carried in the preceding "
                    f"{params.history_s / 86400:g} days ({earlier} earlier tokens; scopes carried: "
                    f"{', '.join(carried_before) or 'none'})."
                ),
                attack=["T1068"],
            )
        ]


# --------------------------------------------------------------------------
# auth.pkce_missing


class PkceMissing(Detector):
    """An authorization-code token issued without PKCE, or with the ``plain`` method.

    One alert per (client, method seen) per UTC day of event time: a client that
    never sends PKCE is one finding a day, not one per token.
    """

    rule_ids = ("auth.pkce_missing",)
    severities = {"auth.pkce_missing": "medium"}
    event_types = frozenset({"auth.token_issued"})
    key_kind = "client"

    def key(self, ev: Any) -> Optional[str]:
        attributes = ev.attributes
        if not attributes or attributes.get("grant_type") != "authorization_code":
            return None
        if attributes.get("pkce_method") == "S256":
            return None  # the common case: PKCE with S256
        principal = ev.principal
        who = (principal.client_id or principal.subject) if principal is not None else None
        return f"{ev.tenant}|{who or ev.event_id}"

    def state_ttl_s(self) -> float:
        return 2 * 24 * 3600.0

    def initial_state(self) -> Any:
        return {}  # method -> UTC day (days since the epoch) last reported

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        method = ev.attributes.get("pkce_method")
        label = method if isinstance(method, str) and method else "absent"
        now = ts(ev.time)
        day = int(now // 86400)
        if state.get(label) == day:
            return state, NO_ALERTS
        state[label] = day
        principal = ev.principal
        client = principal.client_id if principal is not None and principal.client_id else None
        subject = principal.subject if principal is not None and principal.subject else None
        token = ev.token
        issued = token.jti and f"jti {token.jti}" or token.fingerprint or "a token"
        problem = "without PKCE (no pkce_method)" if label == "absent" else f"with PKCE method {label!r} (only S256 protects the code)"
        return state, [
            self.alert(
                "auth.pkce_missing",
                ev,
                identity=(client or subject or ev.event_id, label, _iso(day * 86400.0)[:10]),
                title="Authorization code exchanged without S256 PKCE",
                description=(
                    f"{ev.source.name} issued {issued} for an authorization_code grant {problem}"
                    f"{f' to client {client}' if client else ''}{f' for {subject}' if subject else ''}; "
                    f"an intercepted code can be redeemed. Reported once per client and method per UTC day."
                ),
                attack=["T1528"],
            )
        ]


#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (FailureBurst, DcrFlood, CimdMismatch, NewClient, ScopeEscalation, PkceMissing)
