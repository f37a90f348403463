"""Per-session flow detections (spec/detections.md, "Tools"):
``flow.exfiltration`` (the "lethal trifecta" / toxic flow) and
``tool.error_burst`` (probing).

Both keep their state per session (``session_key``): a session's events stay
in order within one Kafka partition, and the runner drops a session's state
once it has been idle for ``idle_s``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from mcpsift.alerts import Alert

from .base import NO_ALERTS, Detector, Params
from .timing import event_ts

__all__ = ["DETECTORS", "FlowExfiltration", "ErrorBurst", "LEG_LABELS"]

#: the roles a tool can play in a toxic flow (values of the ``labels`` threshold)
LEG_LABELS = ("untrusted", "private", "public_sink")

_UNTRUSTED, _PRIVATE, _SINK = LEG_LABELS


class FlowExfiltrationParams(Params):
    #: seconds within which a sink call must follow the private read
    window_s: float = Field(default=600.0, gt=0)
    #: role per tool, overriding its annotations: keys are a tool name, or
    #: "<server name>:<tool name>" for one server's tool (that wins over the bare name)
    labels: dict[str, Literal["untrusted", "private", "public_sink"]] = Field(default={})
    #: event-time seconds an idle session's state is kept
    idle_s: float = Field(default=24 * 3600.0, gt=0)


def tool_leg(ev: Any, labels: dict[str, str]) -> Optional[str]:
    """The role of an ``mcp.tool_call`` in a toxic flow, or None.

    A configured label wins (``server:tool`` before ``tool``); otherwise the
    annotations decide: read-only and open-world reads untrusted content,
    read-only and not open-world (false or absent) reads private data,
    open-world and not read-only sends data out. A call that failed or was
    refused (``outcome.status`` error/denied) moved no data: it is no leg.
    """
    outcome = ev.outcome
    if outcome is not None and outcome.status is not None and outcome.status != "ok":
        return None
    tool = ev.tool
    if labels:
        server = ev.server
        name = server.name if server is not None else None
        label = (labels.get(f"{name}:{tool.name}") if name else None) or labels.get(tool.name)
        if label is not None:
            return label
    annotations = tool.annotations
    if not annotations:
        return None
    read_only = annotations.get("readOnlyHint") is True
    if annotations.get("openWorldHint") is True:
        return _UNTRUSTED if read_only else _SINK
    return _PRIVATE if read_only else None


class FlowExfiltration(Detector):
    """Untrusted content read, private data read, then a call that sends data out.

    Fires at a sink call (``public_sink``) when, in the same session, a private
    read happened at most ``window_s`` before it and an untrusted read happened
    at any time before it. The untrusted read may come before or after the
    private read: injected instructions can steer the sink either way, as long
    as both reads precede it. A sink before the private read, or a session with
    only two of the legs, does not fire.

    One alert per (session, untrusted tool, private tool, sink tool): repeated
    sends through the same sink after the same reads are one incident; another
    sink or another private source is new evidence. The evidence is the first
    untrusted read, the latest private read and the sink call.
    """

    rule_ids = ("flow.exfiltration",)
    severities = {"flow.exfiltration": "high"}
    # session_end only to forget an ended session's legs (the key lives on until idle_s)
    event_types = frozenset({"mcp.tool_call", "mcp.session_end"})
    key_kind = "session"
    Params = FlowExfiltrationParams

    def __init__(self, params: Optional[Params] = None, tenant_params: Optional[dict[str, Params]] = None):
        super().__init__(params, tenant_params)
        # the role key() found for the event step() is about to see (one event at a time):
        # the event and its role, kept apart so no tuple is made per call
        self._leg_ev: Any = None
        self._leg: Optional[str] = None
        #: whether any labels are configured (for the rule or a tenant): without, the annotations decide
        self._labelled = bool(self.params.labels) or any(p.labels for p in self.tenant_params.values())

    def key(self, ev: Any) -> Optional[str]:
        # tool_leg(), inlined and reordered (the role first, the outcome only of a
        # call with one): this runs for every tool call, and most play no role or
        # play one that needs nothing but the lookup of the session's state
        if ev.type == "mcp.tool_call":
            tool = ev.tool
            leg = self._label(ev, tool) if self._labelled else None
            if leg is None:
                annotations = tool.annotations
                if not annotations:
                    return None
                if annotations.get("openWorldHint") is True:
                    leg = _UNTRUSTED if annotations.get("readOnlyHint") is True else _SINK
                elif annotations.get("readOnlyHint") is True:
                    leg = _PRIVATE
                else:
                    return None  # a call that plays no role needs no state: skip the lookup
            outcome = ev.outcome
            if outcome is not None:
                status = outcome.status
                if status != "ok" and status is not None:
                    return None  # failed or refused: moved no data
            self._leg_ev = ev
            self._leg = leg
        session = ev.session
        if session is None or not session.id:
            return None
        return f"{ev.tenant}|{session.id}"  # base.session_key, inlined

    def _label(self, ev: Any, tool: Any) -> Optional[str]:
        """The configured role of the call's tool (``server:tool`` before ``tool``), or None."""
        labels = (self.params_for(ev.tenant) if self.tenant_params else self.params).labels
        if not labels:
            return None
        server = ev.server
        name = server.name if server is not None else None
        return (labels.get(f"{name}:{tool.name}") if name else None) or labels.get(tool.name)

    def state_ttl_s(self) -> float:
        return max([self.params.idle_s, *(p.idle_s for p in self.tenant_params.values())])

    def initial_state(self) -> Any:
        # u: [event id, tool] of the first untrusted read; p: [time, event id, tool]
        # of the latest private read; done: "untrusted|private|sink" tool triples alerted
        return {"u": None, "p": None, "done": []}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        if self._leg_ev is ev:  # a tool call key() just saw
            leg = self._leg
        elif ev.type == "mcp.session_end":
            return self.initial_state(), NO_ALERTS  # what the session read is gone with it
        else:  # step without key() just before (another process computed the key)
            leg = tool_leg(ev, (self.params_for(ev.tenant) if self.tenant_params else self.params).labels)
        if leg == _PRIVATE:
            state["p"] = [event_ts(ev), ev.event_id, ev.tool.name]
            return state, NO_ALERTS
        if leg == _UNTRUSTED:
            if state["u"] is None:
                state["u"] = [ev.event_id, ev.tool.name]
            return state, NO_ALERTS
        untrusted, private = state["u"], state["p"]
        if untrusted is None or private is None or leg is None:
            return state, NO_ALERTS
        params = self.params_for(ev.tenant) if self.tenant_params else self.params
        elapsed = event_ts(ev) - private[0]
        if elapsed > params.window_s:
            return state, NO_ALERTS
        name = ev.tool.name
        triple = f"{untrusted[1]}|{private[2]}|{name}"
        if triple in state["done"]:
            return state, NO_ALERTS
        state["done"].append(triple)
        session_id = ev.session.id
        return state, [
            self.alert(
                "flow.exfiltration",
                ev,
                identity=(session_id, untrusted[1], private[2], name),
                title=f"Toxic flow: untrusted input, private data, then {name}",
                description=(
                    f"Session {session_id} read untrusted content with '{untrusted[1]}' (event {untrusted[0]}) "
                    f"and private data with '{private[2]}' (event {private[1]}), then, {elapsed:.0f} s after "
                    f"that private read, called '{name}', which sends data out (event {ev.event_id}): "
                    f"instructions injected by the untrusted content could have exfiltrated the private data."
                ),
                event_ids=[untrusted[0], private[1], ev.event_id],
                attack=["AML.T0051", "AML.T0057", "T1567"],
            )
        ]


class ErrorBurstParams(Params):
    #: failed calls (status error or denied) that make a burst
    count: int = Field(default=10, ge=2)
    #: ... within this many seconds
    window_s: float = Field(default=60.0, gt=0)
    #: event-time seconds a session's failures are kept after its last one (at least window_s)
    idle_s: float = Field(default=600.0, gt=0)


_FAILED = frozenset({"error", "denied"})

#: event ids cited as evidence of a burst (the first ones and the one that completed it)
_EVIDENCE_IDS = 10


class ErrorBurst(Detector):
    """``count`` failed tool calls in one session within ``window_s`` (probing).

    One alert per burst: a burst starts with the call that completes ``count``
    failures within the window and lasts until ``window_s`` pass without a
    failed call; only then can the session's next failures make a new burst.
    """

    rule_ids = ("tool.error_burst",)
    severities = {"tool.error_burst": "low"}
    event_types = frozenset({"mcp.tool_call"})
    key_kind = "session"
    Params = ErrorBurstParams

    def key(self, ev: Any) -> Optional[str]:
        # successful calls need no state: for most calls this is one comparison
        try:
            status = ev.outcome.status
        except AttributeError:  # no outcome
            return None
        if status == "ok" or status not in _FAILED:
            return None
        session = ev.session
        if session is None or not session.id:
            return None
        return f"{ev.tenant}|{session.id}"  # base.session_key, inlined

    def state_ttl_s(self) -> float:
        params = [self.params, *self.tenant_params.values()]
        return max(max(p.idle_s, p.window_s) for p in params)

    def initial_state(self) -> Any:
        # recent: [[time, event id, tool], ...] of the last `count` failures within the window;
        # burst: time of the last failure of the open burst, or None
        return {"recent": [], "burst": None}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        params = self.params_for(ev.tenant) if self.tenant_params else self.params
        now = event_ts(ev)
        recent: list[list[Any]] = state["recent"]
        recent.append([now, ev.event_id, ev.tool.name])
        if len(recent) > params.count:
            del recent[0]
        while now - recent[0][0] > params.window_s:  # too old to count again
            del recent[0]
        burst = state["burst"]
        if burst is not None:
            if now - burst <= params.window_s:
                state["burst"] = now  # the burst goes on
                return state, NO_ALERTS
            state["burst"] = None
        if len(recent) < params.count:
            return state, NO_ALERTS
        state["burst"] = now
        session_id = ev.session.id
        tools = sorted({r[2] for r in recent})
        statuses = ev.outcome.status
        ids = [r[1] for r in recent]
        if len(ids) > _EVIDENCE_IDS:
            ids = ids[: _EVIDENCE_IDS - 1] + [ids[-1]]
        return state, [
            self.alert(
                "tool.error_burst",
                ev,
                identity=(session_id, recent[0][1]),
                title="Burst of failed tool calls in one session",
                description=(
                    f"Session {session_id} made {len(recent)} tool calls that failed or were refused within "
                    f"{now - recent[0][0]:.0f} s (threshold {params.count} in {params.window_s:.0f} s; last "
                    f"outcome {statuses}), calling {', '.join(repr(t) for t in tools)}: probing for what the "
                    f"caller may do."
                ),
                event_ids=ids,
                attack=["T1595"],
            )
        ]


#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (FlowExfiltration, ErrorBurst)
