"""The hooks end to end: a real MCP SDK server (streamable HTTP, uvicorn, JWT
bearer auth) with the SDK middleware, the auditing verifier and the ASGI
middleware, driven by the SDK's real client, publishing through

* ``HttpPublisher`` to a running ``mcpsift serve`` (the events are stored), and
* ``KafkaPublisher`` to a Tansu broker (the events are on ``mcp.events``, keyed
  per the spec).

Every event the hooks built arrives once, as built; no raw token appears in
any stored or published byte (nor in the publisher's spool)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx

from mcpsift.collectors.build import flush_pending
from mcpsift.collectors.publishers import HttpPublisher, KafkaPublisher, event_key
from tests.fixtures.kafka import read_topic
from tests.helpers.event_views import drop_none, normalise_timestamps
from tests.helpers.mcp_server import JWTIssuer, drive_session, http_client, running_server
from tests.helpers.read_store import stored_events


class Tee:
    """Keeps what the hooks submitted, and passes it on to the publisher."""

    def __init__(self, publisher: Any):
        self.publisher = publisher
        self.events: list[dict[str, Any]] = []

    def submit(self, event: dict[str, Any]) -> bool:
        self.events.append(json.loads(json.dumps(event)))  # a copy: events share nested objects
        return self.publisher.submit(event)


def _session_with_attacks(tee: Tee) -> list[str]:
    """A normal session, a token for another audience (401), a token in the query string.
    Returns the raw tokens used."""
    issuer = JWTIssuer()
    with running_server(tee, issuer) as server:
        good = issuer.mint(audience=server.resource, scopes=["crm:read"])
        anyio.run(drive_session, server, good)
        wrong_audience = issuer.mint(audience="https://mcp.acme.example/billing", scopes=["crm:read"])
        in_query = issuer.mint(audience=server.resource, scopes=["crm:read"])

        async def attacks() -> tuple[int, int]:
            ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            accept = {"Accept": "application/json, text/event-stream"}
            async with http_client(wrong_audience) as http:
                first = (await http.post(server.url, json=ping, headers=accept)).status_code
            async with http_client(None) as http:
                second = (await http.post(server.url, params={"access_token": in_query}, json=ping, headers=accept)).status_code
            return first, second

        assert anyio.run(attacks) == (401, 401)
        flush_pending()
    return [good, wrong_audience, in_query]


def _expected_types(events: list[dict[str, Any]]) -> None:
    types = Counter(e["type"] for e in events)
    for kind, n in {"mcp.session_start": 1, "mcp.tools_list": 1, "mcp.tool_call": 3, "mcp.resource_read": 1,
                    "mcp.prompt_get": 1, "mcp.session_end": 1, "auth.challenge": 2}.items():
        assert types[kind] == n, (kind, types)
    outcomes = sorted(e["outcome"]["status"] for e in events if e["type"] == "mcp.tool_call")
    assert outcomes == ["denied", "error", "ok"]
    verdicts = [e for e in events if e["type"] == "auth.token"]
    assert any(e.get("outcome", {}).get("reason") == "wrong_audience" for e in verdicts)
    assert any(e["attributes"].get("token_location") == "query" for e in verdicts)


def _no_raw_token(blobs: list[bytes], tokens: list[str]) -> None:
    for token in tokens:
        parts = [token.encode()] + [p.encode() for p in token.split(".")[1:] if len(p) > 16]  # payload, signature
        for blob in blobs:
            for part in parts:
                assert part not in blob, "a raw token (or a segment of it) reached storage"


def test_hooks_to_mcpsift_serve_through_the_http_publisher(serve_factory, tmp_path: Path) -> None:
    server = serve_factory()
    spool = tmp_path / "spool"
    publisher = HttpPublisher(server.url + "/v1/events", spool_dir=str(spool), ingest_key=server.ingest_key).start()
    tee = Tee(publisher)
    tokens = _session_with_attacks(tee)
    assert publisher.flush(timeout=30), publisher.status()
    status = publisher.status()
    assert status["sent"] == len(tee.events) and status["rejected"] == 0 and status["dropped"] == 0
    publisher.close()
    health = httpx.get(server.url + "/healthz", timeout=10).json()
    assert health["accepted"] == len(tee.events) and health["rejected"] == 0
    server.stop()

    report = stored_events(server.data_dir)
    stored = {e["event_id"]: e for e in report["stored_events"]}
    assert set(report["event_id_counts"].values()) == {1}
    assert set(stored) == {e["event_id"] for e in tee.events}, "every event arrives once"
    for event in tee.events:  # arrives as built (the pipeline only fills in what was left out)
        got = normalise_timestamps(drop_none(stored[event["event_id"]]))
        for key, value in normalise_timestamps(drop_none(event)).items():
            assert got[key] == value, (event["type"], key)
    _expected_types(list(stored.values()))
    blobs = [json.dumps(report).encode()] + [p.read_bytes() for p in spool.rglob("*") if p.is_file()]
    _no_raw_token(blobs, tokens)


def test_hooks_to_kafka_through_the_kafka_publisher(broker, tmp_path: Path) -> None:
    topic = broker.create_topic("mcp.events", partitions=3)
    publisher = KafkaPublisher(broker.bootstrap, topic=topic, spool_dir=str(tmp_path / "spool")).start()
    tee = Tee(publisher)
    tokens = _session_with_attacks(tee)
    assert publisher.flush(timeout=30), publisher.status()
    publisher.close()

    records = read_topic(broker.bootstrap, topic, expected=len(tee.events))
    published = [json.loads(r.value) for r in records]
    assert Counter(e["event_id"] for e in published) == Counter({e["event_id"]: 1 for e in tee.events})
    built = {e["event_id"]: e for e in tee.events}
    session_ids = set()
    for record, event in zip(records, published):
        assert event == built[event["event_id"]]
        assert record.key == event_key(event)  # spec "Keys and ordering"
        if event["type"].startswith("mcp."):
            session_ids.add(record.key)
    assert len(session_ids) == 1, "one session's events share one key (one partition, in order)"
    session_events = [e for r, e in zip(records, published) if e["type"].startswith("mcp.")]
    assert [e["type"] for e in session_events][0] == "mcp.session_start"
    assert [e["type"] for e in session_events][-1] == "mcp.session_end"
    _expected_types(published)
    _no_raw_token([r.value for r in records] + [r.key or b"" for r in records], tokens)


def test_ingest_outage_mid_session_loses_nothing_and_keeps_session_order(serve_factory, tmp_path: Path) -> None:
    """Tool calls go on while `mcpsift serve` is down (killed), the publisher
    spools; serve comes back on the same port: every event is stored once, and
    the session's events are stored in the order the hooks built them."""
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    server = serve_factory()
    publisher = HttpPublisher(server.url + "/v1/events", spool_dir=str(tmp_path / "spool"), spill_after=0.5,
                              ingest_key=server.ingest_key).start()
    tee = Tee(publisher)
    issuer = JWTIssuer()
    with running_server(tee, issuer) as mcp_server:
        token = issuer.mint(audience=mcp_server.resource, scopes=["crm:read"])

        async def calls(n: int, session: Any) -> None:
            for i in range(n):
                await session.call_tool("find_contact", {"query": f"contact {i}"})

        async def session_with_outage() -> None:
            async with http_client(token) as http:
                async with streamable_http_client(mcp_server.url, http_client=http) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        await calls(15, session)
                        await anyio.to_thread.run_sync(server.kill)  # ingest gone, calls go on
                        await calls(30, session)
                        await anyio.to_thread.run_sync(lambda: server.start(port=server.port))
                        await calls(15, session)

        anyio.run(session_with_outage)
        flush_pending()
    assert publisher.flush(timeout=60), publisher.status()
    status = publisher.status()
    publisher.close()
    assert status["spilled"] > 0, "the outage should have sent events to the spool"
    server.stop()

    report = stored_events(server.data_dir)
    # a batch in flight when serve died is sent again (at-least-once): stored once as every query sees it
    assert report["event_id_counts"] == {e["event_id"]: 1 for e in tee.events}
    stored_ids = list(dict.fromkeys(e["event_id"] for e in report["stored_events"]))  # first arrival, ingest order
    session_built = [e["event_id"] for e in tee.events if e["type"].startswith("mcp.")]
    session_stored = [i for i in stored_ids if i in set(session_built)]
    assert session_stored == session_built, "the session's events are stored in the order they happened"
    assert sum(1 for e in tee.events if e["type"] == "mcp.tool_call") == 60
