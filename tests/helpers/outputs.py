"""Shared by the output tests: alerts to send (plain and hostile) and a way to
push them through one configured output without the delivery engine."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Sequence

from mcpsift.alerts import Alert, make_alert_id
from mcpsift.streams.sinks.outputs import Outcome, build_outputs, clean_alert, parse_output_configs

__all__ = ["HOSTILE", "make_alert", "hostile_alert", "send_through"]

#: text with every delimiter the wire formats care about, control characters,
#: a lone surrogate (what a ``\udc80`` JSON escape in source data becomes) and length
HOSTILE = (
    "a|b\\c=d\ne\rf]g\"h'<i>&j{k}l\tm\x00n\x1bo" "\udc80" "p\u2028q\u00e9r\U0001F600s CEF:0|x|y|"
)


def make_alert(**overrides: Any) -> Alert:
    data: dict[str, Any] = {
        "rule_id": "token.audience_mismatch",
        "severity": "high",
        "time": dt.datetime(2026, 11, 20, 8, 0, 1, 250000, tzinfo=dt.timezone.utc),
        "tenant": "acme",
        "principal_subject": "alice@example.com",
        "client_id": "https://client.example/cimd.json",
        "session_id": "sess-1",
        "token_fingerprint": "hmac-sha256:" + "ab" * 32,
        "server_resource": "https://mcp.example.com/mcp",
        "event_ids": ["01JEVENT0000000000000000001"],
        "title": "Token presented at a server outside its audience",
        "description": "Token minted for https://other.example/mcp was presented at https://mcp.example.com/mcp.",
        "score": 0.9,
        "attack": ["T1550.001"],
        "detector": "auth_tokens.AudienceMismatch",
    }
    data.update(overrides)
    if "alert_id" not in data:
        data["alert_id"] = make_alert_id(data["rule_id"], data["session_id"], data["title"], data["time"])
    return Alert(**data)


def hostile_alert(length: int = 20_000, **overrides: Any) -> Alert:
    """An alert whose every free-text field carries :data:`HOSTILE` (and one very long one)."""
    return make_alert(
        rule_id="tool.poisoning",
        principal_subject="eve|\\=\n" + HOSTILE,
        client_id=HOSTILE,
        session_id="s\n1|=\\",
        server_resource="https://evil.example/mcp?a=1|b=2\n",
        title="Poisoned " + HOSTILE,
        description=(HOSTILE * (length // len(HOSTILE) + 1))[:length],
        tenant="t|=\\\n",
        **overrides,
    )


def send_through(config: dict[str, Any], alerts: Sequence[Alert]) -> list[Outcome]:
    """Open the output ``config`` describes, send ``alerts`` as one batch (cleaned
    as the engine cleans them), close it; the outcomes."""
    (output,) = build_outputs(parse_output_configs([config]))

    async def run() -> list[Outcome]:
        await output.open()
        try:
            return await output.send([clean_alert(a) for a in alerts])
        finally:
            await output.close()

    return asyncio.run(run())
