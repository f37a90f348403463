"""The ocsf output: the Detection Finding mapping, its validation, and both
targets (a real loopback HTTP receiver, a real file)."""

from __future__ import annotations

import calendar
import json
from pathlib import Path
from typing import Any

import pytest

from mcpsift import __version__
from mcpsift.streams.sinks.ocsf import detection_finding, validate_finding
from mcpsift.streams.sinks.outputs import OutputConfigError, build_outputs, clean_alert, parse_output_configs
from tests.helpers.outputs import hostile_alert, make_alert, send_through

#: 2026-11-20T08:00:01.250Z, the time of make_alert(), in ms since the epoch
SAMPLE_MS = calendar.timegm((2026, 11, 20, 8, 0, 1)) * 1000 + 250


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_exact_mapping_of_a_sample_alert() -> None:
    alert = make_alert()
    assert detection_finding(alert) == {
        "activity_id": 1,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": 4,
        "severity": "High",
        "status_id": 1,
        "status": "New",
        "is_alert": True,
        "time": SAMPLE_MS,
        "message": "Token presented at a server outside its audience",
        "metadata": {
            "version": "1.8.0",
            "uid": alert.alert_id,
            "product": {"name": "mcpsift", "vendor_name": "mcpsift", "version": __version__},
        },
        "finding_info": {
            "uid": alert.alert_id,
            "title": "Token presented at a server outside its audience",
            "desc": "Token minted for https://other.example/mcp was presented at https://mcp.example.com/mcp.",
            "types": ["token.audience_mismatch"],
            "analytic": {
                "uid": "token.audience_mismatch",
                "name": "token.audience_mismatch",
                "type_id": 1,
                "type": "Rule",
            },
            "created_time": SAMPLE_MS,
            "related_events": [{"uid": "01JEVENT0000000000000000001"}],
            "attacks": [{"technique": {"uid": "T1550"}, "sub_technique": {"uid": "T1550.001"}}],
        },
        "risk_score": 90,
        "confidence_score": 90,
        "actor": {"user": {"uid": "alice@example.com"}, "session": {"uid": "sess-1"}},
        "resources": [
            {"uid": "https://mcp.example.com/mcp", "name": "https://mcp.example.com/mcp", "type": "MCP server"}
        ],
        "unmapped": {
            "tenant": "acme",
            "client_id": "https://client.example/cimd.json",
            "token_fingerprint": "hmac-sha256:" + "ab" * 32,
            "detector": "auth_tokens.AudienceMismatch",
        },
    }


@pytest.mark.parametrize(
    "severity, severity_id, caption",
    [("low", 2, "Low"), ("medium", 3, "Medium"), ("high", 4, "High"), ("critical", 5, "Critical")],
)
def test_severity(severity: str, severity_id: int, caption: str) -> None:
    finding = detection_finding(make_alert(severity=severity))
    assert (finding["severity_id"], finding["severity"]) == (severity_id, caption)


def test_sparse_alert_and_attack_tags() -> None:
    alert = make_alert(
        principal_subject=None,
        session_id=None,
        server_resource=None,
        client_id=None,
        token_fingerprint=None,
        detector=None,
        score=0.125,
        event_ids=["e1", "e2"],
        attack=["T1190", "TA0001", "AML.T0051", "AML.T0051.000", "AML.TA0005", "CVE-2025-0001"],
    )
    finding = detection_finding(alert)
    assert "actor" not in finding and "resources" not in finding  # nothing known: left out, not null
    assert finding["unmapped"] == {"tenant": "acme", "attack": ["CVE-2025-0001"]}
    assert (finding["risk_score"], finding["confidence_score"]) == (12, 12)
    assert finding["finding_info"]["related_events"] == [{"uid": "e1"}, {"uid": "e2"}]
    assert finding["finding_info"]["attacks"] == [
        {"technique": {"uid": "T1190"}},
        {"tactic": {"uid": "TA0001"}},
        {"technique": {"uid": "AML.T0051"}},
        {"technique": {"uid": "AML.T0051"}, "sub_technique": {"uid": "AML.T0051.000"}},
        {"tactic": {"uid": "AML.TA0005"}},
    ]
    assert "attacks" not in detection_finding(make_alert(attack=[]))["finding_info"]


# What OCSF 1.8.0 requires, from the schema sources (ocsf/ocsf-schema: events/base_event.json
# with its classification and occurrence traits, events/findings/finding.json and
# detection_finding.json, objects/metadata.json, finding_info.json, analytic.json,
# related_event.json, attack.json, actor.json), with the JSON type of each attribute's
# data type (integer_t/long_t/timestamp_t: integer, string_t: string, objects: object).
REQUIRED_1_8 = {
    "activity_id": int,
    "category_uid": int,
    "class_uid": int,
    "type_uid": int,
    "severity_id": int,
    "time": int,
    "metadata": dict,
    "metadata.product": dict,
    "metadata.version": str,
    "finding_info": dict,
    "finding_info.uid": str,
}


def _get(document: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        document = document[part]
    return document


def test_required_attributes_present_and_typed() -> None:
    finding = json.loads(_compact(detection_finding(make_alert())))  # as a receiver sees it
    for path, kind in REQUIRED_1_8.items():
        value = _get(finding, path)
        assert isinstance(value, kind) and not isinstance(value, bool), path
    assert finding["type_uid"] == finding["class_uid"] * 100 + finding["activity_id"]
    assert finding["time"] == SAMPLE_MS and finding["finding_info"]["created_time"] == SAMPLE_MS
    # requirements of the optional objects we fill
    assert finding["finding_info"]["analytic"]["type_id"] == 1  # analytic.type_id is required (1 = Rule)
    assert all(isinstance(e["uid"], str) for e in finding["finding_info"]["related_events"])
    assert all({"tactic", "technique", "sub_technique"} & set(a) for a in finding["finding_info"]["attacks"])
    assert {"user", "session"} & set(finding["actor"])  # actor: at least one of them
    assert all(isinstance(finding[k], int) for k in ("risk_score", "confidence_score", "status_id"))
    assert validate_finding(finding) == []


@pytest.mark.parametrize(
    "path",
    [
        "activity_id",
        "category_uid",
        "class_uid",
        "type_uid",
        "severity_id",
        "time",
        "metadata",
        "metadata.product",
        "metadata.version",
        "finding_info",
        "finding_info.uid",
        "finding_info.title",
    ],
)
def test_validate_finding_catches_a_missing_attribute(path: str) -> None:
    finding = detection_finding(make_alert())
    parent, _, key = path.rpartition(".")
    del (_get(finding, parent) if parent else finding)[key]
    assert validate_finding(finding) == [f"{path} is missing"]


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"time": "2026-11-20T08:00:01Z"}, "time must be an integer, not '2026-11-20T08:00:01Z'"),
        ({"severity_id": True}, "severity_id must be an integer, not True"),
        ({"finding_info": "x"}, "finding_info must be an object, not 'x'"),
        ({"class_uid": 2001, "type_uid": 200101}, "class_uid/category_uid must be 2004/2 (Detection Finding)"),
        ({"type_uid": 200402}, "type_uid must be class_uid * 100 + activity_id"),
        ({"severity_id": 7}, "severity_id 7 is not an OCSF severity"),
    ],
)
def test_validate_finding_catches_wrong_values(change: dict[str, Any], problem: str) -> None:
    finding = {**detection_finding(make_alert()), **change}
    assert validate_finding(finding) == [problem]


def test_url_mode_posts_one_finding_per_request(http_receiver) -> None:
    receiver = http_receiver()
    alerts = [make_alert(session_id="a"), make_alert(session_id="b", severity="low")]
    config = {
        "type": "ocsf",
        "url": receiver.url + "/ingest/ocsf",
        "token": "tok-123",
        "headers": {"X-Source": "mcpsift"},
    }
    outcomes = send_through(config, alerts)
    assert [o.kind for o in outcomes] == ["delivered", "delivered"]
    by_uid = {json.loads(r.body)["finding_info"]["uid"]: r for r in receiver.requests}
    assert set(by_uid) == {a.alert_id for a in alerts}
    for alert in alerts:
        req = by_uid[alert.alert_id]
        assert (req.method, req.path) == ("POST", "/ingest/ocsf")
        assert req.headers["content-type"] == "application/json"
        assert req.headers["authorization"] == "Bearer tok-123"
        assert req.headers["user-agent"] == f"mcpsift/{__version__}"
        assert req.headers["x-source"] == "mcpsift"
        assert req.body == _compact(detection_finding(alert))


def test_url_mode_status_and_invalid_finding_outcomes(http_receiver) -> None:
    receiver = http_receiver(lambda req: (410, {}, b"gone") if b'"uid":"sess-gone"' in req.body else (202, {}, b""))
    alerts = [make_alert(session_id="sess-ok"), make_alert(title=""), make_alert(session_id="sess-gone")]
    outcomes = send_through({"type": "ocsf", "url": receiver.url}, alerts)
    assert [o.kind for o in outcomes] == ["delivered", "failed", "disable"]
    assert outcomes[1].error == "invalid OCSF Detection Finding: finding_info.title must be a non-empty string, not ''"
    assert len(receiver.requests) == 2  # the invalid finding was not sent


def test_token_from_env_or_file(http_receiver, tmp_path: Path, monkeypatch) -> None:
    receiver = http_receiver()
    monkeypatch.setenv("MCPSIFT_TEST_OCSF_TOKEN", "from-env")
    (tmp_path / "token").write_text("from-file\n")
    send_through({"type": "ocsf", "url": receiver.url, "token_env": "MCPSIFT_TEST_OCSF_TOKEN"}, [make_alert()])
    send_through({"type": "ocsf", "url": receiver.url, "token_file": str(tmp_path / "token")}, [make_alert()])
    assert [r.headers["authorization"] for r in receiver.requests] == ["Bearer from-env", "Bearer from-file"]


def test_file_mode_writes_findings_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "ocsf" / "findings.jsonl"
    alerts = [make_alert(session_id=f"s{i}") for i in range(5)]
    line_size = len(_compact(detection_finding(alerts[0]))) + 1
    config = {"type": "ocsf", "path": str(path), "max_bytes": 3 * line_size, "backups": 1}
    assert [o.kind for o in send_through(config, alerts)] == ["delivered"] * 5
    assert [line for line in Path(f"{path}.1").read_bytes().splitlines(keepends=True)] == [
        _compact(detection_finding(a)) + b"\n" for a in alerts[:3]
    ]
    assert path.read_bytes() == b"".join(_compact(detection_finding(a)) + b"\n" for a in alerts[3:])


def test_hostile_alert_stays_valid_json(http_receiver, tmp_path: Path) -> None:
    alert = hostile_alert()
    cleaned = clean_alert(alert)
    receiver = http_receiver()
    path = tmp_path / "findings.jsonl"
    assert send_through({"type": "ocsf", "url": receiver.url}, [alert])[0].kind == "delivered"
    assert send_through({"type": "ocsf", "path": str(path)}, [alert])[0].kind == "delivered"
    data = path.read_bytes()
    assert data.count(b"\n") == 1 and b"\r" not in data and "\u2028".encode() not in data
    for body in (receiver.requests[0].body, data):
        text = body.decode("utf-8")  # strict: valid UTF-8
        finding = json.loads(text)
        assert finding == detection_finding(cleaned)
        assert finding["finding_info"]["desc"] == cleaned.description and len(cleaned.description) == 20_000
        assert finding["actor"]["user"]["uid"] == cleaned.principal_subject
        assert validate_finding(finding) == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "give exactly one of url (POST each finding) or path (write JSON lines)"),
        ({"url": "https://x.example/", "path": "/tmp/x"}, "give exactly one of url"),
        ({"url": "file:///etc/passwd"}, "url: must be an http:// or https:// URL"),
        ({"path": "/tmp/x.jsonl", "token": "s3cr3t-token"}, "token and headers are for url mode"),
        (
            {"url": "https://x.example/", "token": "s3cr3t-token", "headers": {"Authorization": "Basic eA=="}},
            "either as token or as an Authorization header",
        ),
        (
            {"url": "https://x.example/", "token_env": "MCPSIFT_TEST_UNSET_TOKEN"},
            "token_env: environment variable MCPSIFT_TEST_UNSET_TOKEN is not set",
        ),
        (
            {"url": "https://x.example/", "token": "s3cr3t-token", "token_env": "HOME"},
            "token: give one of token, token_file, token_env",
        ),
    ],
)
def test_bad_config_is_a_clear_error(monkeypatch, options: dict[str, Any], message: str) -> None:
    monkeypatch.delenv("MCPSIFT_TEST_UNSET_TOKEN", raising=False)
    with pytest.raises(OutputConfigError) as err:
        parse_output_configs([{"type": "ocsf", **options}])
    assert message in str(err.value) and "s3cr3t" not in str(err.value)


def test_describe_hides_token_and_credentials(tmp_path: Path) -> None:
    url_output, file_output = build_outputs(
        parse_output_configs(
            [
                {
                    "type": "ocsf",
                    "name": "lake",
                    "url": "https://u:pw@lake.example/v1/ocsf?key=k1",
                    "token": "s3cr3t-token",
                },
                {"type": "ocsf", "name": "disk", "path": str(tmp_path / "f.jsonl")},
            ]
        )
    )
    assert url_output.describe() == "ocsf https://lake.example/v1/ocsf"
    assert file_output.describe() == f"ocsf file {tmp_path / 'f.jsonl'}"
    assert "s3cr3t" not in repr(url_output.config)
