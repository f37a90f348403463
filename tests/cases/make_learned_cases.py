"""Writes the data-file cases of the learned rules (``tool.unusual_sequence``,
``volume.anomaly``): they need hundreds of sessions or tens of minutes of
history, too many events to write by hand.

    python tests/cases/make_learned_cases.py      # rewrites the files below, byte for byte

Deterministic (seeded ``random.Random`` per case), so the checked-in files are
exactly what this script writes; edit this script, not the generated files.
Events are kept small and clean with respect to the other rules (one client
per tenant, so ``auth.new_client`` fires once; no tokens; plain arguments
without paths, URLs, shell or secrets; unique, strictly increasing times so
shuffling within the allowed lateness cannot reorder them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
START = dt.datetime(2026, 11, 20, 8, 0, 0, tzinfo=dt.timezone.utc)
CLIENT = "https://assistant.example.com/oauth/client.json"


class Writer:
    """Builds one case file: events with unique ids, written in time order with
    strictly increasing times (a collision moves the later event by 1 ms)."""

    def __init__(self, case: str, tenant: str = "acme"):
        self.case = case
        self.tenant = tenant
        self.prefix = hashlib.sha256(case.encode()).hexdigest()[:8]
        self.count = 0
        self.events: list[tuple[dt.datetime, int, dict[str, Any]]] = []

    @staticmethod
    def _stamp(at: dt.datetime) -> str:
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"

    @property
    def lines(self) -> list[str]:
        out = []
        last: Optional[dt.datetime] = None
        for at, _, ev in sorted(self.events, key=lambda item: (item[0], item[1])):
            at = at.replace(microsecond=at.microsecond // 1000 * 1000)
            if last is not None and at <= last:
                at = last + dt.timedelta(milliseconds=1)
            last = at
            out.append(json.dumps({**ev, "time": self._stamp(at)}, separators=(",", ":")))
        return out

    def event(self, etype: str, at: dt.datetime, *, server: str, subject: str, session: Optional[str],
              client: str = CLIENT, **fields: Any) -> str:
        self.count += 1
        event_id = f"{self.prefix}-0000-7000-8000-{self.count:012x}"
        ev: dict[str, Any] = {
            "schema": "mcpsift.event/1",
            "event_id": event_id,
            "time": "",
            "type": etype,
            "tenant": self.tenant,
            "source": {"kind": "server", "name": server},
            "server": {"name": server, "resource": f"https://mcp.{self.tenant}.example/{server.split('-')[0]}"},
            "principal": {"subject": subject, "client_id": client},
        }
        if session is not None:
            ev["session"] = {"id": session}
        ev.update(fields)
        self.events.append((at, self.count, ev))
        return event_id

    def call(self, at: dt.datetime, tool: str, *, server: str, subject: str, session: Optional[str],
             arguments: Optional[dict[str, Any]] = None, annotations: Optional[dict[str, bool]] = None,
             status: str = "ok", client: str = CLIENT) -> str:
        body: dict[str, Any] = {"name": tool, "arguments": arguments if arguments is not None else {"query": "quarterly report"}}
        if annotations is not None:
            body["annotations"] = annotations
        outcome: dict[str, Any] = {"status": status}
        if status == "error":
            outcome["error"] = "upstream timeout after 30 s"
        elif status == "denied":
            outcome["reason"] = "policy"
        return self.event("mcp.tool_call", at, server=server, subject=subject, session=session, client=client,
                          tool=body, outcome=outcome)

    def end(self, at: dt.datetime, *, server: str, subject: str, session: str) -> str:
        return self.event("mcp.session_end", at, server=server, subject=subject, session=session)

    def write(self, rule: str, description: str, alerts: dict[str, int], settings: Optional[dict[str, Any]] = None) -> None:
        folder = HERE / rule
        folder.mkdir(exist_ok=True)
        lines = self.lines
        (folder / f"{self.case}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        expect: dict[str, Any] = {"description": description, "alerts": alerts}
        if settings:
            expect["settings"] = settings
        (folder / f"{self.case}.expect.json").write_text(json.dumps(expect, indent=2) + "\n", encoding="utf-8")
        size = (folder / f"{self.case}.jsonl").stat().st_size
        print(f"{rule}/{self.case}.jsonl: {len(lines)} events, {size / 1e6:.2f} MB")


# --------------------------------------------------------------------------
# tool.unusual_sequence: one tenant's workflow, a first-order chain over six tools

WORKFLOW: dict[str, list[tuple[str, float]]] = {
    "<start>": [("search_docs", 0.6), ("list_tickets", 0.4)],
    "search_docs": [("read_doc", 0.8), ("search_docs", 0.2)],
    "read_doc": [("summarize", 0.5), ("read_doc", 0.2), ("<end>", 0.3)],
    "summarize": [("<end>", 0.7), ("search_docs", 0.3)],
    "list_tickets": [("get_ticket", 0.9), ("<end>", 0.1)],
    "get_ticket": [("update_ticket", 0.4), ("get_ticket", 0.3), ("<end>", 0.3)],
    "update_ticket": [("<end>", 0.8), ("list_tickets", 0.2)],
}
SERVER_OF = {"search_docs": "docs-mcp", "read_doc": "docs-mcp", "summarize": "docs-mcp",
             "list_tickets": "tracker-mcp", "get_ticket": "tracker-mcp", "update_ticket": "tracker-mcp",
             "export_all_docs": "docs-mcp", "send_webhook": "tracker-mcp"}
USERS = [f"user{i:02d}@acme.example" for i in range(20)]
#: never seen in normal sessions: new tools, in an order normal sessions never use
ODD = ["search_docs", "read_doc", "export_all_docs", "send_webhook", "send_webhook"]


def normal_sequence(rng: random.Random) -> list[str]:
    names: list[str] = []
    state = "<start>"
    while len(names) < 8:
        r, acc = rng.random(), 0.0
        for nxt, p in WORKFLOW[state]:
            acc += p
            if r < acc:
                break
        if nxt == "<end>":
            break
        names.append(nxt)
        state = nxt
    return names or ["search_docs"]


class Sessions:
    """Sessions one after another, each in a minute of its own (so no principal
    ever makes enough calls in one minute to interest volume.anomaly)."""

    def __init__(self, w: Writer, rng: random.Random):
        self.w = w
        self.rng = rng
        self.n = 0

    def run(self, names: list[str], user: Optional[str] = None) -> None:
        self.n += 1
        minute = START + dt.timedelta(minutes=self.n)
        user = user or USERS[self.rng.randrange(len(USERS))]
        session = f"sess-{self.w.prefix}-{self.n:05d}"
        at = minute + dt.timedelta(seconds=1)
        for name in names:
            self.w.call(at, name, server=SERVER_OF[name], subject=user, session=session,
                        arguments={"query": self.rng.choice(("renewal", "incident review", "pricing", "roadmap"))})
            at += dt.timedelta(seconds=2 + self.rng.random() * 5)
        self.w.end(at, server=SERVER_OF[names[-1]], subject=user, session=session)

    def normal(self, count: int) -> None:
        for _ in range(count):
            self.run(normal_sequence(self.rng))


def sequence_cases() -> None:
    rule = "tool.unusual_sequence"
    new_client = {"auth.new_client": 1}

    w = Writer("quiet_first_499_sessions_then_improbable")
    s = Sessions(w, random.Random(1))
    s.normal(499)
    s.run(ODD)
    w.write(rule, "tool.unusual_sequence must not fire on the first 500 sessions: 499 normal sessions, then a "
            "session with never-seen tools and transitions (it is the 500th: the model has learned only 499).",
            {rule: 0, **new_client})

    w = Writer("fires_after_500_sessions_on_improbable_sequence")
    s = Sessions(w, random.Random(2))
    s.normal(500)
    s.run(ODD)
    s.normal(5)
    w.write(rule, "tool.unusual_sequence fires when, after 500 learned sessions, a session calls tools in an order "
            "never seen (read_doc -> export_all_docs -> send_webhook, tools and transitions new to the tenant): "
            "its rarest window's mean surprise exceeds the threshold calibrated on the tenant's own sessions. "
            "One alert per session.",
            {rule: 1, **new_client})

    w = Writer("quiet_on_sequence_seen_before")
    s = Sessions(w, random.Random(3))
    for i in range(520):
        s.run(ODD if i in (40, 160) else normal_sequence(s.rng))
    s.run(ODD)
    w.write(rule, "tool.unusual_sequence must not fire on a sequence seen before: the improbable sequence of the "
            "'fires' case already appeared twice among the first 520 sessions (learned then), so after the "
            "warm-up every transition of it has been seen.",
            {rule: 0, **new_client})

    w = Writer("quiet_normal_sessions_after_warmup")
    s = Sessions(w, random.Random(4))
    s.normal(650)
    w.write(rule, "tool.unusual_sequence stays quiet on 650 sessions drawn from the tenant's usual workflow: "
            "after the 500-session warm-up, every transition has been seen.",
            {rule: 0, **new_client})


# --------------------------------------------------------------------------
# volume.anomaly

VOL_TOOLS = ["search_docs", "read_doc", "summarize", "list_tickets", "get_ticket", "update_ticket",
             "list_folder", "read_document", "list_events", "find_free_slots", "run_query", "describe_table"]


def minute_of(w: Writer, rng: random.Random, minute: int, user: str, calls: int, tools: list[str],
              errors: int = 0, session: Optional[str] = None) -> None:
    """``calls`` calls of ``user`` spread over event-time minute ``minute`` (from START)."""
    base = START + dt.timedelta(minutes=minute)
    offsets = sorted(rng.sample(range(500, 59_500), calls))
    failed = set(rng.sample(range(calls), errors)) if errors else set()
    session = session or f"sess-{w.prefix}-{user.split('@')[0]}"
    for i, ms in enumerate(offsets):
        tool = tools[i % len(tools)]
        w.call(base + dt.timedelta(milliseconds=ms), tool, server=SERVER_OF.get(tool, "data-mcp"), subject=user,
               session=session, status="error" if i in failed else "ok")


def volume_cases() -> None:
    rule = "volume.anomaly"
    new_client = {"auth.new_client": 1}
    dana = "dana@acme.example"

    w = Writer("quiet_burst_in_first_30_minutes")
    rng = random.Random(11)
    for m in range(25):
        minute_of(w, rng, m, dana, rng.randint(3, 5), rng.sample(VOL_TOOLS[:6], 2))
    minute_of(w, rng, 25, dana, 120, VOL_TOOLS)
    for m in range(26, 29):
        minute_of(w, rng, m, dana, rng.randint(3, 5), rng.sample(VOL_TOOLS[:6], 2))
    w.write(rule, "volume.anomaly must not fire in a principal's first 30 minutes: 25 minutes of 3-5 calls, then "
            "120 calls over 12 tools in minute 26 (a baseline of 25 active minutes exists, but less than 30 "
            "minutes of history).", {rule: 0, **new_client})

    w = Writer("fires_call_burst_after_baseline")
    rng = random.Random(12)
    for m in range(40):
        minute_of(w, rng, m, dana, rng.randint(3, 6), rng.sample(VOL_TOOLS[:6], 2))
    minute_of(w, rng, 40, dana, 90, VOL_TOOLS[:2])
    for m in range(41, 43):
        minute_of(w, rng, m, dana, rng.randint(3, 6), rng.sample(VOL_TOOLS[:6], 2))
    w.write(rule, "volume.anomaly fires when a principal's calls per minute depart from its baseline (40 minutes "
            "of 3-6 calls) by a robust z-score >= 6: 90 calls in minute 41. One alert for that principal and "
            "minute (the minute closes when the tenant's next minute begins).", {rule: 1, **new_client})

    w = Writer("fires_error_ratio_spike")
    rng = random.Random(13)
    for m in range(40):
        minute_of(w, rng, m, dana, 12, rng.sample(VOL_TOOLS[:6], 3), errors=1 if m % 7 == 3 else 0)
    minute_of(w, rng, 40, dana, 12, rng.sample(VOL_TOOLS[:6], 3), errors=9)
    for m in range(41, 43):
        minute_of(w, rng, m, dana, 12, rng.sample(VOL_TOOLS[:6], 3))
    w.write(rule, "volume.anomaly fires when a principal's error ratio departs from its baseline: 12 calls a "
            "minute with at most one failure for 40 minutes, then 9 of 12 calls fail in one minute (calls and "
            "distinct tools unchanged; 9 failures stay below tool.error_burst's 10).", {rule: 1, **new_client})

    w = Writer("quiet_steady_high_volume_service_account")
    rng = random.Random(14)
    svc = "svc-reporting@acme.example"
    for m in range(45):
        calls = 60 + rng.choice((-2, -1, 0, 0, 0, 1, 2)) + (8 if m == 33 else 0)
        minute_of(w, rng, m, svc, calls, VOL_TOOLS[9:12], session=f"sess-{w.prefix}-svc-{m // 15}")
    w.write(rule, "volume.anomaly must not fire on a steady high-volume service account: about 60 calls every "
            "minute for 45 minutes (nearly constant: MAD about 1), one minute of 68 -- the scale floor (the "
            "Poisson noise of a count of 60) keeps z small.", {rule: 0, **new_client})

    w = Writer("quiet_intermittent_principal_idle_minutes")
    rng = random.Random(15)
    for k in range(30):
        minute_of(w, rng, k * 8 + rng.randrange(3), dana, rng.randint(1, 3), rng.sample(VOL_TOOLS[:6], 1))
    minute_of(w, rng, 245, dana, 6, VOL_TOOLS[:3])
    minute_of(w, rng, 252, dana, 1, VOL_TOOLS[:1])
    w.write(rule, "volume.anomaly must not fire on a usually idle principal's ordinary activity: 1-3 calls once "
            "every ~8 minutes for 4 hours (idle minutes are no observations: with them the median and MAD "
            "would be 0), then a minute of 6 calls.", {rule: 0, **new_client})


def main() -> None:
    sequence_cases()
    volume_cases()


if __name__ == "__main__":
    main()
