"""Authentication, client and server detectors: what the data cases cannot show.

Registry documents for ``server.unapproved`` (formats, loading errors, URLs),
per-tenant thresholds, the spec's defaults, and detector state surviving a
snapshot (it must be JSON).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Optional

import msgspec
import pytest

from mcpsift.detectors import RULES, UnknownDetector, build_detectors
from mcpsift.detectors import servers as servers_module
from mcpsift.detectors.servers import load_registry
from mcpsift.settings import Settings
from mcpsift.streams.detect import DetectStage
from mcpsift.streams.pipeline import Pipeline

CASES = Path(__file__).parent / "cases"
MY_RULES = (
    "auth.weak_token_accepted",
    "auth.revoked_token_used",
    "auth.token_in_query",
    "auth.cross_tenant",
    "auth.failure_burst",
    "auth.dcr_flood",
    "auth.cimd_mismatch",
    "auth.new_client",
    "auth.scope_escalation",
    "auth.pkce_missing",
    "server.unapproved",
)

_counter = 0


def _event(type_: str, second: float, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    global _counter
    _counter += 1
    minute, sec = divmod(second, 60)
    hour, minute = divmod(int(minute), 60)
    return {
        "schema": "mcpsift.event/1",
        "event_id": f"0194aaaa-0000-7000-8000-{_counter:012d}",
        "time": f"2026-11-20T{9 + hour:02d}:{minute:02d}:{sec:06.3f}Z",
        "type": type_,
        "tenant": tenant,
        "source": {"kind": "server", "name": "crm-mcp"},
        **fields,
    }


def _call(second: float, server: dict[str, Any], tenant: str = "acme") -> dict[str, Any]:
    return _event(
        "mcp.tool_call",
        second,
        tenant,
        server=server,
        principal={"subject": "dana@acme.example"},
        tool={"name": "search", "arguments": {"query": "renewals"}},
        outcome={"status": "ok"},
    )


def _denied_token(second: float, ip: str, tenant: str = "acme") -> dict[str, Any]:
    return _event(
        "auth.token",
        second,
        tenant,
        server={"name": "crm-mcp", "resource": "https://mcp.acme.example/crm"},
        token={"fingerprint": "sha256:" + "ab" * 32, "audience": ["https://mcp.acme.example/crm"], "alg": "RS256"},
        network={"client_ip": ip},
        outcome={"status": "denied", "reason": "invalid_signature"},
    )


def _run(events: list[dict[str, Any]], settings: Optional[Settings] = None) -> list[Any]:
    pipeline = Pipeline(settings or Settings())
    for ev in events:
        pipeline.push(pipeline.validate(json.dumps(ev)))
    return pipeline.release() + pipeline.drain()


def _unapproved_settings(tenant: str = "acme", **params: Any) -> Settings:
    return Settings(detectors={"tenant_thresholds": {tenant: {"server.unapproved": params}}})


# --------------------------------------------------------------------------
# the spec's defaults


def test_thresholds_default_to_the_spec() -> None:
    expected = {
        "auth.failure_burst": {"threshold": 20, "window_s": 60.0},
        "auth.dcr_flood": {"threshold": 10, "window_s": 600.0},
        "auth.scope_escalation": {
            "denied_threshold": 3,
            "denied_window_s": 600.0,
            "history_s": 7 * 86400.0,
            "min_tokens": 20,
        },
        "server.unapproved": {"approved": None, "registry_file": None},
    }
    for rule, values in expected.items():
        params = RULES[rule].Params()
        for name, value in values.items():
            assert getattr(params, name) == value, (rule, name)


# --------------------------------------------------------------------------
# server.unapproved: registry documents


SERVER_JSON = {
    "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
    "name": "io.github.acme/crm",
    "description": "CRM over MCP",
    "version": "2.4.1",
    "remotes": [
        {"type": "streamable-http", "url": "https://mcp.acme.example/crm"},
        {"type": "sse", "url": "https://{host}/billing/", "variables": {"host": {"default": "MCP.acme.example"}}},
        {"type": "streamable-http", "url": "https://{tenant}.vendor.example/mcp", "variables": {"tenant": {}}},
    ],
    "packages": [{"registryType": "npm", "identifier": "@acme/crm-mcp", "version": "2.4.1"}],
}


def _write(tmp_path: Path, document: Any, name: str = "registry.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def test_registry_single_server_json(tmp_path: Path) -> None:
    loaded = load_registry(_write(tmp_path, SERVER_JSON))
    assert loaded.servers == 1
    assert {
        "io.github.acme/crm",
        "crm",  # the last segment of the name, what a server usually calls itself
        "@acme/crm-mcp",
        "https://mcp.acme.example/crm",
        "https://mcp.acme.example/billing",  # a template filled with its default, normalised
    } <= loaded.approved
    assert not any("vendor.example" in entry for entry in loaded.approved)  # a template without default


def test_registry_list_response_skips_deleted_servers(tmp_path: Path) -> None:
    response = {
        "servers": [
            {"server": SERVER_JSON, "_meta": {"io.modelcontextprotocol.registry/official": {"status": "active"}}},
            {
                "server": {"name": "io.github.acme/old-wiki", "version": "0.1.0"},
                "_meta": {"io.modelcontextprotocol.registry/official": {"status": "deleted"}},
            },
            {"server": {"name": "io.github.acme/docs", "version": "1.0.0", "remotes": [{"type": "sse", "url": "https://docs.acme.example/sse"}]}},
        ],
        "metadata": {"count": 3},
    }
    loaded = load_registry(_write(tmp_path, response))
    assert loaded.servers == 2
    assert {"io.github.acme/docs", "docs", "https://docs.acme.example/sse"} <= loaded.approved
    assert "old-wiki" not in loaded.approved and "io.github.acme/old-wiki" not in loaded.approved


def test_registry_bare_list(tmp_path: Path) -> None:
    loaded = load_registry(_write(tmp_path, [SERVER_JSON, {"name": "io.github.acme/docs"}]))
    assert loaded.servers == 2 and "docs" in loaded.approved


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read MCP registry document"),
        ("{not json", "is not valid JSON"),
        ('{"servers": []}', "holds no server entries"),
        ('{"description": "no name"}', "holds no server entries"),
    ],
)
def test_registry_errors_name_the_file_tenant_and_rule(tmp_path: Path, content: Optional[str], message: str) -> None:
    path = tmp_path / "acme-registry.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UnknownDetector) as info:
        build_detectors(tenant_thresholds={"acme": {"server.unapproved": {"registry_file": str(path)}}})
    text = str(info.value)
    assert message in text and str(path) in text
    assert "tenant_thresholds.acme" in text and "server.unapproved" in text and "registry_file" in text


def test_registry_url_must_be_https() -> None:
    with pytest.raises(UnknownDetector, match=r"only https:// URLs"):
        build_detectors(thresholds={"server.unapproved": {"registry_file": "http://registry.example/v0/servers"}})


class _Response(io.BytesIO):
    def __enter__(self) -> "_Response":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def test_registry_url_follows_cursor_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = {
        "https://registry.acme.example/v0/servers?limit=2": {
            "servers": [{"server": {"name": "io.github.acme/crm"}}],
            "metadata": {"nextCursor": "abc", "count": 1},
        },
        "https://registry.acme.example/v0/servers?limit=2&cursor=abc": {
            "servers": [{"server": {"name": "io.github.acme/docs"}}],
            "metadata": {"count": 1},
        },
    }
    fetched: list[str] = []

    def fake_urlopen(request: Any, timeout: float) -> _Response:
        fetched.append(request.full_url)
        return _Response(json.dumps(pages[request.full_url]).encode())

    monkeypatch.setattr(servers_module.urllib.request, "urlopen", fake_urlopen)
    loaded = load_registry("https://registry.acme.example/v0/servers?limit=2")
    assert fetched == list(pages)
    assert loaded.servers == 2 and {"crm", "docs"} <= loaded.approved
    assert str(loaded) == "https://registry.acme.example/v0/servers?limit=2"


def test_registry_url_fetch_failure_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(request: Any, timeout: float) -> Any:
        raise OSError("connection refused")

    monkeypatch.setattr(servers_module.urllib.request, "urlopen", failing)
    with pytest.raises(UnknownDetector, match=r"cannot fetch MCP registry document https://registry\.acme\.example/x.*refused"):
        build_detectors(tenant_thresholds={"acme": {"server.unapproved": {"registry_file": "https://registry.acme.example/x"}}})


def test_registry_document_is_read_once_at_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, SERVER_JSON)
    reads: list[str] = []
    original = servers_module._read_source
    monkeypatch.setattr(servers_module, "_read_source", lambda source: reads.append(source) or original(source))
    settings = _unapproved_settings(registry_file=path)
    pipeline = Pipeline(settings)
    assert reads == [path]
    for i in range(5):
        pipeline.push(pipeline.validate(json.dumps(_call(i, {"name": "weather-mcp"}))))
    pipeline.drain()
    assert reads == [path]  # never per event


def test_server_unapproved_with_a_registry_document(tmp_path: Path) -> None:
    settings = _unapproved_settings(registry_file=_write(tmp_path, SERVER_JSON))
    alerts = _run(
        [
            _call(1, {"name": "crm"}),  # the registry name's last segment
            _call(2, {"resource": "https://mcp.acme.example/crm/"}),  # a remote url
            _call(3, {"name": "billing", "resource": "https://mcp.acme.example/billing"}),  # a filled template
            _call(4, {"name": "weather-mcp", "resource": "https://mcp.weather.example/mcp"}),
            _call(5, {"name": "weather-mcp", "resource": "https://mcp.weather.example/mcp"}),
            _call(6, {"name": "crm"}, tenant="globex"),  # globex has no registry
        ],
        settings,
    )
    unapproved = [a for a in alerts if a.rule_id == "server.unapproved"]
    assert len(unapproved) == 1
    (alert,) = unapproved
    assert alert.tenant == "acme" and alert.server_resource == "https://mcp.weather.example/mcp"
    assert "weather-mcp" in alert.description and "registry.json" in alert.description


def test_server_unapproved_list_and_document_together(tmp_path: Path) -> None:
    settings = _unapproved_settings(approved=["weather-mcp"], registry_file=_write(tmp_path, SERVER_JSON))
    alerts = _run([_call(1, {"name": "weather-mcp"}), _call(2, {"name": "crm"}), _call(3, {"name": "docs-mcp"})], settings)
    (alert,) = [a for a in alerts if a.rule_id == "server.unapproved"]
    assert "name 'docs-mcp'" in alert.description


def test_server_unapproved_empty_list_approves_nothing() -> None:
    alerts = _run([_call(1, {"name": "crm-mcp"})], _unapproved_settings(approved=[]))
    assert [a.rule_id for a in alerts if a.rule_id == "server.unapproved"] == ["server.unapproved"]


def test_server_unapproved_not_subscribed_without_any_registry() -> None:
    detectors, wanted = build_detectors(enabled=["server.unapproved"])
    stage = DetectStage(detectors, wanted)
    assert all(not dets for dets in stage.by_type.values())  # never called: costs nothing
    detectors, wanted = build_detectors(
        enabled=["server.unapproved"], tenant_thresholds={"acme": {"server.unapproved": {"approved": ["crm-mcp"]}}}
    )
    assert all(dets for dets in DetectStage(detectors, wanted).by_type.values())


def test_server_unapproved_global_list_applies_to_every_tenant() -> None:
    settings = Settings(detectors={"thresholds": {"server.unapproved": {"approved": ["crm-mcp"]}}})
    alerts = _run([_call(1, {"name": "wiki-mcp"}), _call(2, {"name": "wiki-mcp"}, tenant="globex")], settings)
    assert sorted(a.tenant for a in alerts if a.rule_id == "server.unapproved") == ["acme", "globex"]


# --------------------------------------------------------------------------
# per-tenant thresholds


def test_failure_burst_threshold_per_tenant() -> None:
    settings = Settings(
        detectors={"tenant_thresholds": {"acme": {"auth.failure_burst": {"threshold": 5, "window_s": 10}}}}
    )
    events = [_denied_token(1 + i, "198.51.100.9") for i in range(6)]
    events += [_denied_token(1 + i, "198.51.100.9", tenant="globex") for i in range(6)]
    alerts = [a for a in _run(events, settings) if a.rule_id == "auth.failure_burst"]
    assert [a.tenant for a in alerts] == ["acme"]
    assert "5 failed authentications from ip 198.51.100.9" in alerts[0].description
    assert len(alerts[0].event_ids) == 5


def test_dcr_flood_threshold_per_tenant() -> None:
    settings = Settings(detectors={"tenant_thresholds": {"globex": {"auth.dcr_flood": {"threshold": 3}}}})
    events = [
        _event(
            "auth.client_registered",
            10 * i,
            tenant,
            principal={"client_id": f"dyn-{tenant}-{i}"},
            network={"client_ip": "192.0.2.7"},
            attributes={"client_name": "Tool"},
        )
        for tenant in ("acme", "globex")
        for i in range(3)
    ]
    alerts = [a for a in _run(events, settings) if a.rule_id == "auth.dcr_flood"]
    assert [a.tenant for a in alerts] == ["globex"]


# --------------------------------------------------------------------------
# state is JSON and survives a snapshot


@pytest.mark.parametrize("rule", MY_RULES)
def test_state_survives_a_snapshot_mid_case(rule: str) -> None:
    """Half of each case, snapshot (JSON), restore into a new pipeline, the other
    half: the same alerts as one uninterrupted run."""
    for path in sorted((CASES / rule).glob("fires_*.jsonl")):
        expect = json.loads(path.with_name(path.name[: -len(".jsonl")] + ".expect.json").read_text())
        settings = Settings(**expect.get("settings", {}))
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        whole = Pipeline(settings)
        for line in lines:
            whole.push(whole.validate(line))
        want = sorted(a.alert_id for a in whole.drain())

        first = Pipeline(settings)
        half = len(lines) // 2
        got = []
        for line in lines[:half]:
            first.push(first.validate(line))
        got += first.drain()
        blob = first.snapshot()
        msgspec.json.decode(blob)  # plain JSON
        second = Pipeline(settings)
        second.restore(blob)
        for line in lines[half:]:
            second.push(second.validate(line))
        got += second.drain()
        assert sorted(a.alert_id for a in got) == want, path.name


# --------------------------------------------------------------------------
# details the cases do not pin


def _accepted(second: float, token: dict[str, Any]) -> dict[str, Any]:
    return _event(
        "auth.token",
        second,
        server={"name": "crm-mcp", "resource": "https://mcp.acme.example/crm"},
        principal={"subject": "dana@acme.example", "issuer": "https://id.acme.example"},
        token=token,
        outcome={"status": "ok"},
    )


def test_revocation_is_forgotten_after_the_token_expires() -> None:
    token = {
        "fingerprint": "sha256:" + "cd" * 32,
        "jti": "j-1",
        "audience": ["https://mcp.acme.example/crm"],
        "issued_at": "2026-11-20T09:00:00Z",
        "expires_at": "2026-11-20T09:05:00Z",
        "alg": "RS256",
        "issuer": "https://id.acme.example",
    }
    revoked = _event("auth.token_revoked", 60, token={"jti": "j-1", "expires_at": "2026-11-20T09:05:00Z"})
    alerts = _run([revoked, _accepted(10 * 60, token)])
    rules = sorted(a.rule_id for a in alerts)
    # ten minutes after revocation, five after expiry: the expiry rule speaks, not this one
    assert "auth.revoked_token_used" not in rules and "auth.expired_token_accepted" in rules


def test_revoked_token_alert_cites_the_revocation() -> None:
    token = {
        "fingerprint": "sha256:" + "ef" * 32,
        "audience": ["https://mcp.acme.example/crm"],
        "issued_at": "2026-11-20T09:00:00Z",
        "expires_at": "2026-11-20T10:00:00Z",
        "alg": "RS256",
    }
    revoked = _event("auth.token_revoked", 60, token={"fingerprint": token["fingerprint"]})
    (alert,) = [a for a in _run([revoked, _accepted(120, token)]) if a.rule_id == "auth.revoked_token_used"]
    assert alert.event_ids == [revoked["event_id"], _event_id_of_last()]
    assert "60 s after it was revoked" in alert.description


def _event_id_of_last() -> str:
    return f"0194aaaa-0000-7000-8000-{_counter:012d}"


def test_weak_token_description_names_every_weakness() -> None:
    token = {"fingerprint": "sha256:" + "12" * 32, "audience": [], "alg": "none"}
    (alert,) = [a for a in _run([_accepted(5, token)]) if a.rule_id == "auth.weak_token_accepted"]
    assert "alg 'none'" in alert.description and "no expires_at" in alert.description
    assert "empty audience" in alert.description


def test_failure_burst_after_a_quiet_window_is_a_new_incident() -> None:
    events = [_denied_token(i, "198.51.100.9") for i in range(20)]
    events += [_denied_token(40 + i, "198.51.100.9") for i in range(40)]  # the same burst goes on
    events += [_denied_token(200 + i, "198.51.100.9") for i in range(19)]  # new burst, below threshold
    alerts = [a for a in _run(events) if a.rule_id == "auth.failure_burst"]
    assert len(alerts) == 1
