"""Tool detections: ``tool.definition_drift`` (rug pulls).

The other ``tool.*`` rules of spec/detections.md arrive with the detection
catalogue issue, as modules beside this one.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from mcpsift.alerts import Alert

from .base import NO_ALERTS, Detector, Params, server_key

__all__ = ["DETECTORS", "DefinitionDrift"]


class DefinitionDriftParams(Params):
    #: event-time seconds a server's first-seen tool hashes are remembered after its last event
    memory_s: float = Field(default=90 * 24 * 3600.0, gt=0)


class DefinitionDrift(Detector):
    """A tool's definition hash differs from the first one seen for that server and tool."""

    rule_ids = ("tool.definition_drift",)
    severities = {"tool.definition_drift": "high"}
    event_types = frozenset({"mcp.tools_list", "mcp.tool_call"})
    key_kind = "server"
    Params = DefinitionDriftParams

    def key(self, ev: Any) -> Optional[str]:
        if ev.type == "mcp.tool_call" and ev.tool.definition_hash is None:
            return None  # nothing to compare: skip the state lookup entirely
        return server_key(ev)

    def state_ttl_s(self) -> float:
        return self.params.memory_s

    def initial_state(self) -> Any:
        # {"tools": {tool name: {"first": hash, "first_event": id, "alerted": [hashes]}}}
        return {"tools": {}}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        tools: dict[str, dict[str, Any]] = state["tools"]
        if ev.type == "mcp.tools_list":
            pairs = [(t.name, t.definition_hash) for t in ev.tools if t.definition_hash]
        else:
            tool = ev.tool
            known = tools.get(tool.name)
            if known is not None and known["first"] == tool.definition_hash:
                return state, NO_ALERTS  # the common case: a call to an unchanged tool
            pairs = [(tool.name, tool.definition_hash)]
        alerts: list[Alert] = []
        for name, digest in pairs:
            known = tools.get(name)
            if known is None:
                tools[name] = {"first": digest, "first_event": ev.event_id, "alerted": []}
                continue
            if digest == known["first"] or digest in known["alerted"]:
                continue
            known["alerted"].append(digest)
            server = ev.server.name or ev.server.resource
            alerts.append(
                self.alert(
                    "tool.definition_drift",
                    ev,
                    identity=(server, name, digest),
                    title=f"Tool definition changed after first use: {name}",
                    description=(
                        f"Tool '{name}' on server '{server}' now has definition hash {digest}; "
                        f"the first definition seen (event {known['first_event']}) had {known['first']}. "
                        f"A tool that changes after approval may be a rug pull."
                    ),
                    event_ids=[known["first_event"], ev.event_id],
                    attack=["AML.T0051"],
                )
            )
        return state, alerts

#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (DefinitionDrift,)
