"""The Detector interface (ARCHITECTURE.md, "A detector").

A detector declares its ``rule_ids``, the event ``types`` it reads, the kind of
entity its state is keyed by, and a pure step ``(state, event) -> (state,
alerts)``. State is a small JSON-serialisable value (dicts, lists, strings,
numbers) per key: the embedded runner keeps it in a dict and snapshots it to
the store; the faust runner keeps it in a Table after repartitioning by the
same key. A detector never does I/O and never looks at wall-clock time:
everything it decides is a function of event time and the events it saw.

When it is called: :meth:`Detector.key` once per event of a subscribed type,
then :meth:`Detector.step` with the state stored under that key (or
:meth:`Detector.initial_state` for a new key). Keys idle for longer than
:meth:`Detector.state_ttl_s` of event time are dropped by the runner.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict

from mcpsift.alerts import Alert, make_alert_id

__all__ = [
    "Detector",
    "Params",
    "KEY_KINDS",
    "NO_ALERTS",
    "token_key",
    "session_key",
    "server_key",
    "ts",
]

#: what a step returns when it found nothing (shared: steps run per event)
NO_ALERTS: list[Alert] = []

#: the entities a detector's state may be keyed by (ARCHITECTURE.md)
KEY_KINDS = ("token", "session", "principal", "client", "server", "tenant")


class Params(BaseModel):
    """A detector's thresholds; subclasses add fields with the spec's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def ts(value: _dt.datetime) -> float:
    """Event time as POSIX seconds (what detector state stores)."""
    return value.timestamp()


def token_key(ev: Any) -> Optional[str]:
    """The token's identity within its tenant: issuer+jti when known, else its fingerprint.

    issuer+jti is preferred because two gateways with different fingerprint
    keys still agree on it.
    """
    token = ev.token
    if token is None:
        return None
    if token.jti:
        issuer = token.issuer or (ev.principal.issuer if ev.principal is not None else None) or ""
        return f"{ev.tenant}|jti|{issuer}|{token.jti}"
    if token.fingerprint:
        return f"{ev.tenant}|fp|{token.fingerprint}"
    return None


def session_key(ev: Any) -> Optional[str]:
    session = ev.session
    if session is None or not session.id:
        return None
    return f"{ev.tenant}|{session.id}"


def server_key(ev: Any) -> Optional[str]:
    server = ev.server
    if server is None:
        return None
    label = server.name or server.resource
    return f"{ev.tenant}|{label}" if label else None


class Detector:
    """Base class of every detector; see the module docstring for the contract."""

    #: the rule ids this detector may emit (spec/detections.md)
    rule_ids: ClassVar[tuple[str, ...]] = ()
    #: severity per rule id
    severities: ClassVar[dict[str, str]] = {}
    #: event types it reads; every event of another type skips it
    event_types: ClassVar[frozenset[str]] = frozenset()
    #: for some of its event types, the only ``outcome.status`` values it reads
    #: (``None`` standing for an event without an outcome): the runner does not
    #: call it on other events of that type, e.g. ``{"mcp.tool_call":
    #: frozenset({"error", "denied"})}`` skips the calls that went through
    outcomes: ClassVar[dict[str, frozenset[Optional[str]]]] = {}
    #: the entity its state is keyed by (one of KEY_KINDS), or None if stateless
    key_kind: ClassVar[Optional[str]] = None
    #: its thresholds, with the spec's defaults
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Optional[Params] = None, tenant_params: Optional[dict[str, Params]] = None):
        self.params = params if params is not None else self.Params()
        #: tenant -> its thresholds, for tenants configured differently from the default
        self.tenant_params: dict[str, Params] = dict(tenant_params or {})

    def params_for(self, tenant: str) -> Any:
        """The thresholds that apply to ``tenant`` (its overrides, else the rule's)."""
        if self.tenant_params:
            return self.tenant_params.get(tenant, self.params)
        return self.params

    def attach_models(self, model_dir: Any) -> None:
        """Called once at start by the runner with the directory learned models live in
        (``<data_dir>/models``); detectors without learned models ignore it."""

    @property
    def name(self) -> str:
        return self.rule_ids[0]

    def key(self, ev: Any) -> Optional[str]:
        """The state key of ``ev``, or None when the event does not concern this detector.

        Not called for stateless detectors (``key_kind = None``).
        """
        raise NotImplementedError

    def initial_state(self) -> Any:
        return None

    def state_ttl_s(self) -> float:
        """Event-time seconds after which an idle key's state may be dropped."""
        return 24 * 3600.0

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        raise NotImplementedError

    # -- helpers for subclasses -------------------------------------------

    def alert(
        self,
        rule_id: str,
        ev: Any,
        *,
        identity: tuple[object, ...],
        title: str,
        description: str,
        event_ids: Optional[list[str]] = None,
        score: float = 1.0,
        attack: Optional[list[str]] = None,
    ) -> Alert:
        """An alert about ``ev`` (the event that completed the evidence)."""
        principal = ev.principal
        token = ev.token
        session = ev.session
        server = ev.server
        ids = list(event_ids) if event_ids else [ev.event_id]
        if ev.event_id not in ids:
            ids.append(ev.event_id)
        return Alert(
            alert_id=make_alert_id(rule_id, ev.tenant, *identity),
            rule_id=rule_id,
            severity=self.severities[rule_id],  # type: ignore[arg-type]
            time=ev.time,
            tenant=ev.tenant,
            principal_subject=principal.subject if principal is not None else None,
            client_id=principal.client_id if principal is not None else None,
            session_id=session.id if session is not None else None,
            token_fingerprint=token.fingerprint if token is not None else None,
            server_resource=server.resource if server is not None else None,
            event_ids=ids,
            title=title,
            description=description,
            score=score,
            attack=attack or [],
            detector=type(self).__name__,
        )
