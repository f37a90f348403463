"""Session detections: ``session.hijack``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mcpsift.alerts import Alert

from .base import NO_ALERTS, Detector, Params, session_key

__all__ = ["DETECTORS", "SessionHijack"]


class SessionHijackParams(Params):
    #: event-time seconds an idle session's state is kept
    idle_s: float = Field(default=24 * 3600.0, gt=0)


class SessionHijack(Detector):
    """One session id used by two subjects, or moving to a new ip *and* user agent."""

    rule_ids = ("session.hijack",)
    severities = {"session.hijack": "high"}
    event_types = frozenset()  # every type: any event may carry a session id
    key_kind = "session"
    Params = SessionHijackParams

    #: the session, within its tenant (the helper itself: one call less per event)
    key = staticmethod(session_key)  # type: ignore[assignment]

    def state_ttl_s(self) -> float:
        return self.params.idle_s

    def initial_state(self) -> Any:
        # subjects: {subject: first event id}; fps: {fingerprint: subject};
        # net: [ip, user agent, event id] of the last event that had both
        return {"subjects": {}, "fps": {}, "net": None}

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        principal = ev.principal
        subject = principal.subject if principal is not None else None
        token = ev.token
        network = ev.network
        # the common case: a known subject, no token news, the same ip and user agent
        if subject is not None and subject in state["subjects"] and (token is None or not token.fingerprint):
            last = state["net"]
            if network is None or not (network.client_ip and network.user_agent):
                return state, NO_ALERTS
            if last is not None and last[0] == network.client_ip and last[1] == network.user_agent:
                return state, NO_ALERTS
        alerts: list[Alert] = []
        session_id = ev.session.id
        if token is not None and token.fingerprint and subject is None:
            # a fingerprint seen earlier with a subject vouches for this event
            subject = state["fps"].get(token.fingerprint)
        if subject:
            if token is not None and token.fingerprint:
                state["fps"].setdefault(token.fingerprint, subject)
            subjects: dict[str, str] = state["subjects"]
            if subject not in subjects:
                for other, other_event in sorted(subjects.items()):
                    pair = sorted((other, subject))
                    alerts.append(
                        self.alert(
                            "session.hijack",
                            ev,
                            identity=(session_id, "subjects", *pair),
                            title="MCP session used by two different principals",
                            description=(
                                f"Session {session_id} was opened by '{other}' and is now used by "
                                f"'{subject}': a session id carried over to another identity."
                            ),
                            event_ids=[other_event, ev.event_id],
                            attack=["T1563"],
                        )
                    )
                subjects[subject] = ev.event_id
        if network is not None and network.client_ip and network.user_agent:
            last = state["net"]
            if last is not None and last[0] != network.client_ip and last[1] != network.user_agent:
                alerts.append(
                    self.alert(
                        "session.hijack",
                        ev,
                        identity=(session_id, "network", network.client_ip, network.user_agent),
                        title="MCP session moved to a new client ip and user agent",
                        description=(
                            f"Session {session_id} came from {last[0]} ('{last[1]}') and now from "
                            f"{network.client_ip} ('{network.user_agent}'): both changed at once."
                        ),
                        event_ids=[last[2], ev.event_id],
                        attack=["T1563"],
                    )
                )
            state["net"] = [network.client_ip, network.user_agent, ev.event_id]
        return state, alerts

#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (SessionHijack,)
