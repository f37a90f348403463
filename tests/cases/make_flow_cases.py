"""Writes the data-file cases of ``flow.exfiltration`` and ``tool.error_burst``.

    python tests/cases/make_flow_cases.py      # rewrites the files below, byte for byte

Short sessions written with the same event writer as the learned cases
(make_learned_cases.Writer); edit this script, not the generated files.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from make_learned_cases import START, Writer

UNTRUSTED = {"readOnlyHint": True, "openWorldHint": True}
PRIVATE = {"readOnlyHint": True, "openWorldHint": False}
PRIVATE_NO_OPEN_WORLD = {"readOnlyHint": True, "destructiveHint": False}
SINK = {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": True}
LOCAL_WRITE = {"readOnlyHint": False, "openWorldHint": False}

#: tool -> (server, annotations, arguments)
TOOLS: dict[str, tuple[str, Optional[dict[str, bool]], dict[str, Any]]] = {
    "web_search": ("web-mcp", UNTRUSTED, {"query": "vendor security questionnaire template"}),
    "read_document": ("drive-mcp", PRIVATE, {"doc_id": "DOC-20931"}),
    "get_contact": ("crm-mcp", PRIVATE_NO_OPEN_WORLD, {"contact_id": "CON-1042"}),
    "send_email": ("mail-mcp", SINK, {"to": "partner@vendor.example", "subject": "Questionnaire", "body": "See the answers below."}),
    "post_message": ("chat-mcp", SINK, {"channel": "general", "text": "Summary of the questionnaire."}),
    "update_page": ("wiki-mcp", LOCAL_WRITE, {"page_id": "PG-311", "body": "Updated the onboarding notes."}),
    # without annotations: only a label map gives them a role
    "browse": ("browser-mcp", None, {"query": "competitor pricing page"}),
    "query_customers": ("warehouse-mcp", None, {"segment": "enterprise"}),
    "create_share_link": ("files-mcp", None, {"file_id": "FILE-77"}),
}
DANA = "dana@acme.example"


class Session:
    def __init__(self, w: Writer, name: str, start: dt.datetime = START, subject: str = DANA):
        self.w = w
        self.id = f"sess-{w.prefix}-{name}"
        self.at = start
        self.subject = subject

    def call(self, tool: str, after_s: float = 20.0, status: str = "ok", annotations: Any = "default") -> str:
        self.at += dt.timedelta(seconds=after_s)
        server, ann, args = TOOLS[tool]
        return self.w.call(self.at, tool, server=server, subject=self.subject, session=self.id, arguments=args,
                           annotations=ann if annotations == "default" else annotations, status=status)


def flow_cases() -> None:
    rule = "flow.exfiltration"
    base = {"auth.new_client": 1}

    def case(name: str, steps: list[tuple[Any, ...]], description: str, count: int,
             settings: Optional[dict[str, Any]] = None) -> None:
        w = Writer(name)
        s = Session(w, "a")
        for step in steps:
            s.call(*step)
        w.write(rule, description, {rule: count, **base}, settings)

    case("fires_untrusted_then_private_then_sink",
         [("web_search",), ("read_document",), ("send_email", 120.0)],
         "flow.exfiltration fires when a session reads untrusted content (web_search: readOnlyHint and "
         "openWorldHint), then private data (read_document: readOnlyHint, openWorldHint false), and within 10 min "
         "calls a tool that sends data out (send_email: openWorldHint, not read-only).", 1)
    case("fires_private_then_untrusted_then_sink",
         [("get_contact",), ("web_search",), ("post_message",)],
         "flow.exfiltration fires when the untrusted read comes after the private read (openWorldHint absent "
         "counts as not open-world), as long as both precede the sink: instructions injected by the untrusted "
         "content can still send out what is already in context.", 1)
    case("fires_once_per_tool_triple",
         [("web_search",), ("read_document",), ("send_email",), ("send_email",), ("send_email",),
          ("post_message",)],
         "flow.exfiltration alerts once per (session, untrusted tool, private tool, sink tool): three sends "
         "through send_email after the same reads are one alert, post_message is a second sink and a second "
         "alert.", 2)
    case("fires_label_map_overrides_annotations",
         [("browse",), ("query_customers",), ("create_share_link",), ("update_page",), ("send_email",)],
         "flow.exfiltration uses the configured label map (by tool name, or server:tool) before annotations: "
         "browse is untrusted, query_customers private, create_share_link (on files-mcp) a public sink -- none "
         "has annotations -- so the flow fires at create_share_link; send_email, labelled private here, is no "
         "sink (the label wins over its annotations).", 1,
         {"detectors": {"thresholds": {rule: {"labels": {
             "browse": "untrusted", "warehouse-mcp:query_customers": "private",
             "files-mcp:create_share_link": "public_sink", "send_email": "private"}}}}})
    case("quiet_private_and_sink_without_untrusted",
         [("read_document",), ("update_page",), ("send_email",)],
         "flow.exfiltration must not fire on a session with only two legs: a private read followed by a sink, "
         "no untrusted content read.", 0)
    case("quiet_untrusted_and_sink_without_private",
         [("web_search",), ("update_page",), ("post_message",)],
         "flow.exfiltration must not fire on a session with only two legs: untrusted content and a sink, no "
         "private read.", 0)
    case("quiet_untrusted_and_private_without_sink",
         [("web_search",), ("read_document",), ("update_page",)],
         "flow.exfiltration must not fire on a session with only two legs: untrusted and private reads, then "
         "only a local write (not open-world).", 0)
    case("quiet_sink_before_private_read",
         [("web_search",), ("send_email",), ("read_document",)],
         "flow.exfiltration must not fire when the sink comes before the private read.", 0)
    case("quiet_sink_more_than_10_minutes_after_private_read",
         [("web_search",), ("read_document",), ("send_email", 601.0)],
         "flow.exfiltration must not fire when the sink follows the private read by more than 10 minutes "
         "(601 s).", 0)
    case("quiet_failed_legs_moved_no_data",
         [("web_search",), ("read_document", 20.0, "denied"), ("send_email",), ("read_document",),
          ("send_email", 20.0, "error")],
         "flow.exfiltration counts only calls that succeeded (outcome ok or absent): a denied private read and "
         "a failed sink moved no data, so no leg is complete.", 0)

    w = Writer("quiet_legs_in_different_sessions")
    Session(w, "a").call("web_search")
    Session(w, "b", START + dt.timedelta(seconds=5)).call("read_document")
    Session(w, "c", START + dt.timedelta(seconds=10)).call("send_email", 60.0)
    w.write(rule, "flow.exfiltration is per session: the three legs in three sessions of one principal do not "
            "make a flow.", {rule: 0, **base})


def error_burst_cases() -> None:
    rule = "tool.error_burst"
    base = {"auth.new_client": 1}

    def failures(s: Session, n: int, every_s: float, tool: str = "read_document", status: str = "error") -> None:
        for i in range(n):
            s.call(tool, every_s, status=status)

    w = Writer("fires_ten_failures_within_60_seconds")
    s = Session(w, "a")
    s.call("get_contact")
    for i, tool in enumerate(["read_document", "get_contact", "update_page", "send_email", "read_document"] * 2):
        s.call(tool, 5.0, status="denied" if i % 3 == 0 else "error")
    w.write(rule, "tool.error_burst fires on 10 mcp.tool_call with outcome error or denied in one session within "
            "60 s (here 45 s, across several tools: probing).", {rule: 1, **base})

    w = Writer("quiet_nine_retries")
    s = Session(w, "a")
    failures(s, 9, 4.0)
    s.call("read_document", 4.0)
    w.write(rule, "tool.error_burst must not fire on fewer than 10 failures: one call retried 9 times, then it "
            "succeeds.", {rule: 0, **base})

    w = Writer("quiet_ten_failures_over_more_than_60_seconds")
    s = Session(w, "a")
    failures(s, 10, 7.0)
    w.write(rule, "tool.error_burst must not fire when 10 failures are spread over more than 60 s (63 s from "
            "the first to the last).", {rule: 0, **base})

    w = Writer("fires_once_per_burst")
    s = Session(w, "a")
    failures(s, 30, 3.0)
    s.call("read_document", 120.0)
    failures(s, 10, 2.0)
    w.write(rule, "tool.error_burst fires once per burst: 30 failures 3 s apart are one burst (one alert); "
            "after two quiet minutes, 10 more within 20 s are a second burst.", {rule: 2, **base})

    w = Writer("quiet_failures_split_across_sessions")
    a = Session(w, "a")
    b = Session(w, "b", START + dt.timedelta(seconds=1))
    for i in range(6):
        a.call("read_document", 4.0, status="error")
        b.call("read_document", 4.0, status="error")
    w.write(rule, "tool.error_burst is per session: 6 + 6 failures in two sessions of one principal within 60 s "
            "are no burst.", {rule: 0, **base})


def main() -> None:
    flow_cases()
    error_burst_cases()


if __name__ == "__main__":
    main()
