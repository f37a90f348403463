"""Example-based tests of the event wire format (spec/events.md) on both views.

Every test that feeds a document runs it through the fast path
(:func:`mcpsift.events.decode_event`, msgspec) *and* the source of truth
(``Event.model_validate_json``, pydantic) and expects the same verdict.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import msgspec
import pydantic
import pytest

from mcpsift import canonical
from tests.helpers.event_views import EXAMPLES, EXAMPLES_PATH, model_view, normalise_timestamps, record_view, tagged
from mcpsift.events import (
    DENIED_REASONS,
    EVENT_TYPES,
    Event,
    EventRecord,
    InvalidEvent,
    decode_event,
    encode_event,
    event_from_dict,
)

EXAMPLE_LINES: list[bytes] = [line for line in EXAMPLES_PATH.read_bytes().splitlines() if line.strip()]
BY_TYPE: dict[str, dict[str, Any]] = {}
for _ex in EXAMPLES:
    BY_TYPE.setdefault(_ex["type"], _ex)



# --------------------------------------------------------------------------
# helpers


def example(etype: str = "mcp.tool_call") -> dict[str, Any]:
    """A deep copy of the first example of ``etype``."""
    return copy.deepcopy(BY_TYPE[etype])


def as_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode("utf-8")


def accept_both(doc: Any) -> tuple[Any, Event]:
    """Decode ``doc`` on both paths; both must accept and agree."""
    raw = doc if isinstance(doc, bytes) else as_bytes(doc)
    record = decode_event(raw)
    model = Event.model_validate_json(raw)
    assert tagged(record_view(record)) == tagged(model_view(model))
    return record, model


def reject_both(doc: Any) -> tuple[str, str]:
    """Decode ``doc`` on both paths; both must reject. Returns both reasons."""
    raw = doc if isinstance(doc, bytes) else as_bytes(doc)
    with pytest.raises(InvalidEvent) as fast:
        decode_event(raw)
    with pytest.raises(pydantic.ValidationError) as slow:
        Event.model_validate_json(raw)
    return str(fast.value), str(slow.value)


def assert_rejected_naming(doc: Any, *words: str) -> None:
    reasons = reject_both(doc)
    for reason in reasons:
        for word in words:
            assert word in reason, f"{word!r} not in reason {reason!r}"


def setpath(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj: Any = doc
    keys = path.split(".")
    for key in keys[:-1]:
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    obj[keys[-1]] = value
    return doc


def delpath(doc: dict[str, Any], path: str) -> dict[str, Any]:
    obj: Any = doc
    keys = path.split(".")
    for key in keys[:-1]:
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    del obj[keys[-1]]
    return doc


# --------------------------------------------------------------------------
# the examples


def test_examples_cover_every_event_type() -> None:
    assert set(BY_TYPE) == set(EVENT_TYPES)


@pytest.mark.parametrize("line", EXAMPLE_LINES, ids=[e["type"] + ":" + e["event_id"][-2:] for e in EXAMPLES])
def test_example_decodes_equal_on_both_paths(line: bytes) -> None:
    record = decode_event(line)
    model = Event.model_validate_json(line)
    assert isinstance(record, EventRecord)
    assert tagged(record_view(record)) == tagged(model_view(model))
    # and both equal the document itself, apart from timestamp spelling
    assert tagged(record_view(record)) == tagged(normalise_timestamps(json.loads(line)))


@pytest.mark.parametrize("line", EXAMPLE_LINES)
def test_example_round_trips_through_encode(line: bytes) -> None:
    record = decode_event(line)
    again = decode_event(encode_event(record))
    assert again == record
    assert event_from_dict(json.loads(line)) == record
    # str input is accepted too
    assert decode_event(line.decode("utf-8")) == record


def test_example_timestamps_are_aware_and_equal() -> None:
    ex = example("auth.token")
    record, model = accept_both(ex)
    assert record.time == model.time == dt.datetime(2026, 11, 20, 9, 0, 6, 500000, tzinfo=dt.timezone.utc)
    assert record.token.expires_at == model.token.expires_at
    assert record.token.expires_at.utcoffset() == dt.timedelta(0)


def test_example_definition_hashes_match_canonical() -> None:
    tools = [tool for ex in EXAMPLES for tool in ex.get("tools") or []]
    assert tools
    for tool in tools:
        assert tool["definition_hash"] == canonical.definition_hash(tool)
    calls = [ex["tool"] for ex in EXAMPLES if "tool" in ex]
    assert calls
    listed = {tool["name"]: tool["definition_hash"] for tool in tools}
    for call in calls:
        assert call["arguments_hash"] == canonical.arguments_hash(call["arguments"])
        assert call["definition_hash"] == listed[call["name"]]


def test_canonical_json_form() -> None:
    assert canonical.canonical_json({"b": 1, "a": [1, {"d": None, "c": "é"}]}) == '{"a":[1,{"c":"é","d":null}],"b":1}'.encode()
    assert canonical.arguments_hash(None) == canonical.arguments_hash({}) == canonical.sha256_ref(b"{}")
    big = {"n": 2**70, "m": {"z": 1, "a": 2}}
    assert canonical.canonical_json(big) == b'{"m":{"a":2,"z":1},"n":1180591620717411303424}'


def test_definition_hash_leaves_out_none_and_extra_members() -> None:
    tool = example("mcp.tools_list")["tools"][0]
    expected = tool["definition_hash"]
    assert canonical.definition_hash({**tool, "title": "x", "definition_hash": "sha256:00"}) == expected
    bare = {"name": "t", "description": "d"}
    assert canonical.definition_hash({**bare, "input_schema": None, "annotations": None}) == canonical.definition_hash(bare)


# --------------------------------------------------------------------------
# unknown fields


def test_unknown_top_level_fields_move_into_attributes() -> None:
    ex = example("mcp.tool_call")
    assert "attributes" not in ex
    ex["x_gateway"] = {"hop": 2}
    ex["region"] = "eu-west-1"
    record, model = accept_both(ex)
    assert record.attributes == model.attributes == {"x_gateway": {"hop": 2}, "region": "eu-west-1"}


def test_unknown_top_level_fields_merge_with_existing_attributes() -> None:
    ex = example("auth.challenge")
    original = dict(ex["attributes"])
    ex["region"] = "eu-west-1"
    ex["http_status"] = 500  # collides with attributes.http_status
    record, model = accept_both(ex)
    expected = {**original, "region": "eu-west-1", "toplevel.http_status": 500}
    assert record.attributes == model.attributes == expected


def test_unknown_top_level_field_with_null_attributes() -> None:
    ex = example("mcp.session_end")
    ex["attributes"] = None
    ex["zzz"] = [1, 2]
    record, model = accept_both(ex)
    assert record.attributes == model.attributes == {"zzz": [1, 2]}


def test_unknown_top_level_field_next_to_non_object_attributes_is_rejected() -> None:
    ex = example("mcp.session_end")
    ex["attributes"] = [1]
    ex["zzz"] = 1
    reject_both(ex)


def test_python_field_name_of_schema_is_an_unknown_field() -> None:
    ex = example("mcp.session_end")
    ex["schema_"] = ex.pop("schema")
    assert_rejected_naming(ex, "schema")


@pytest.mark.parametrize("part", ["source", "server", "principal", "token", "session", "network", "outcome", "trace", "tool", "tool.result", "tools.0", "resource", "prompt"])
def test_unknown_nested_field_is_kept_in_attributes_under_its_path(part: str) -> None:
    etype = {"tools.0": "mcp.tools_list", "resource": "mcp.resource_read", "prompt": "mcp.prompt_get"}.get(part, "mcp.tool_call")
    ex = example(etype)
    ex.setdefault("trace", {})
    ex.setdefault("outcome", {})
    obj: Any = ex
    for key in part.split("."):
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    obj["bogus_field"] = 1
    record, model = accept_both(ex)
    path = part.replace(".0", "[0]") + ".bogus_field"
    assert record.attributes[path] == model.attributes[path] == 1


def test_unknown_members_inside_free_form_objects_are_kept() -> None:
    ex = example("mcp.tool_call")
    ex["tool"]["arguments"]["deep"] = {"x": [1, 2.5, None, True]}
    ex["tool"]["annotations"]["title"] = "Find contact"
    record, model = accept_both(ex)
    assert record.tool.arguments["deep"] == {"x": [1, 2.5, None, True]}
    assert record.tool.annotations["title"] == "Find contact"


# --------------------------------------------------------------------------
# envelope rejections


@pytest.mark.parametrize("field", ["schema", "event_id", "time", "type", "source"])
def test_missing_required_envelope_field(field: str) -> None:
    ex = example()
    del ex[field]
    assert_rejected_naming(ex, field)


@pytest.mark.parametrize(
    ("etype", "path"),
    [
        ("mcp.tool_call", "source.kind"),
        ("mcp.tool_call", "source.name"),
        ("mcp.tool_call", "tool.name"),
        ("mcp.tools_list", "tools.0.name"),
        ("mcp.resource_read", "resource.uri"),
        ("mcp.prompt_get", "prompt.name"),
    ],
)
def test_missing_required_nested_field(etype: str, path: str) -> None:
    ex = delpath(example(etype), path)
    assert_rejected_naming(ex, path.rsplit(".", 1)[-1])


def test_optional_envelope_fields_may_be_absent() -> None:
    ex = example("mcp.session_end")
    for key in ("tenant", "server", "principal", "session"):
        ex.pop(key, None)
    record, model = accept_both(ex)
    assert record.tenant == model.tenant == "default"
    assert record.session is None and model.session is None


@pytest.mark.parametrize("value", ["", None, 7])
def test_bad_event_id(value: Any) -> None:
    assert_rejected_naming(setpath(example(), "event_id", value), "event_id")


@pytest.mark.parametrize("value", ["mcp.tool_called", "MCP.TOOL_CALL", "", None, 3])
def test_unknown_type(value: Any) -> None:
    assert_rejected_naming(setpath(example(), "type", value), "type")


@pytest.mark.parametrize("value", ["mcpsift.event/2", "mcpsift.event/1 ", "", None, 1])
def test_wrong_schema(value: Any) -> None:
    assert_rejected_naming(setpath(example(), "schema", value), "schema")


@pytest.mark.parametrize("value", ["proxy", "Server", "", None, 0])
def test_bad_source_kind(value: Any) -> None:
    assert_rejected_naming(setpath(example(), "source.kind", value), "kind")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("session.transport", "websocket"),
        ("outcome.status", "failed"),
        ("outcome.duration_ms", -1),
        ("outcome.duration_ms", "38.2"),
        ("outcome.duration_ms", True),
        ("tool.result.size", -1),
        ("tool.result.size", 412.0),
        ("tool.result.is_error", "false"),
        ("tool.result.is_error", 0),
        ("token.audience", "https://mcp.acme.example/crm"),
        ("token.scopes", [1]),
        ("tool.arguments", ["query"]),
        ("tenant", None),
        ("source", "crm-mcp"),
        ("source.name", ""),
        ("tool.name", ""),
    ],
)
def test_bad_nested_values_are_rejected_naming_the_field(path: str, value: Any) -> None:
    assert_rejected_naming(setpath(example(), path, value), path.rsplit(".", 1)[-1])


def test_duration_ms_accepts_an_integer_as_a_number() -> None:
    record, model = accept_both(setpath(example(), "outcome.duration_ms", 38))
    assert record.outcome.duration_ms == model.outcome.duration_ms == 38.0
    assert type(record.outcome.duration_ms) is type(model.outcome.duration_ms) is float


# --------------------------------------------------------------------------
# timestamps


@pytest.mark.parametrize("path", ["time", "token.issued_at", "token.expires_at"])
@pytest.mark.parametrize("value", ["2026-11-20T09:00:01", "2026-11-20T09:00:01.123", "2026-11-20 09:00:01"])
def test_naive_timestamp_is_rejected(path: str, value: str) -> None:
    assert_rejected_naming(setpath(example(), path, value), path.rsplit(".", 1)[-1])


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-20",
        "09:00:01Z",
        "20 Nov 2026 09:00:01 GMT",
        "Fri, 20 Nov 2026 09:00:01 +0000",
        "2026-11-20T09:00:01+02",
        "2026-11-20T09:00Z",
        "2026-13-20T09:00:01Z",
        "2026-11-20T25:00:01Z",
        "2026-11-20T09:00:01ZZ",
        "1763629201",
        "",
        1763629201,
        1763629201.5,
        None,
    ],
)
def test_non_rfc3339_time_is_rejected(value: Any) -> None:
    assert_rejected_naming(setpath(example(), "time", value), "time")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20T09:00:01Z", dt.datetime(2026, 11, 20, 9, 0, 1, tzinfo=dt.timezone.utc)),
        ("2026-11-20T09:00:01.5Z", dt.datetime(2026, 11, 20, 9, 0, 1, 500000, tzinfo=dt.timezone.utc)),
        ("2026-11-20T11:00:01+02:00", dt.datetime(2026, 11, 20, 9, 0, 1, tzinfo=dt.timezone.utc)),
        ("2026-11-20T09:00:01.123456-05:30", dt.datetime(2026, 11, 20, 14, 30, 1, 123456, tzinfo=dt.timezone.utc)),
    ],
)
def test_rfc3339_time_with_zone_is_accepted(value: str, expected: dt.datetime) -> None:
    record, model = accept_both(setpath(example(), "time", value))
    assert record.time == model.time == expected
    assert record.time.utcoffset() == model.time.utcoffset()


@pytest.mark.parametrize(
    "value",
    [
        # spellings at the edge of RFC 3339 that the shared parser (msgspec's)
        # decides; whatever it decides, both views must decide the same
        "2026-11-20T09:00:01+0200",
        "2026-11-20t09:00:01z",
        "2026-11-20 09:00:01+02:00",
        "2026-11-20T09:00:01-00:00",
        "2026-11-20T23:59:60Z",
        "2026-11-20T09:00:01.1234567891Z",
    ],
)
def test_edge_timestamp_spellings_get_the_same_verdict(value: str) -> None:
    raw = as_bytes(setpath(example(), "time", value))
    try:
        record = decode_event(raw)
    except InvalidEvent:
        with pytest.raises(pydantic.ValidationError):
            Event.model_validate_json(raw)
    else:
        assert record.time == Event.model_validate_json(raw).time


# --------------------------------------------------------------------------
# privacy

JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkYW5hIiwiYXVkIjoiY3JtIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
# no "gh" anywhere in it: the cheap marker scan must still catch it
GITHUB_PAT = "github_pat_" + "11ABCDEF0123456789_abcdefXjklmnopqrstuvwxyz"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
BEARER = "Bearer 8f14e45fceea167a5a36dedd4bea2543"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("token.jti", JWT),
        ("token.fingerprint", JWT),
        ("principal.subject", JWT),
        ("token.issuer", JWT),
        ("principal.client_id", GITHUB_TOKEN),
        ("principal.client_id", GITHUB_PAT),
        ("token.jti", GITHUB_TOKEN),
        ("token.jti", AWS_KEY_ID),
        ("principal.subject", AWS_KEY_ID),
        ("principal.issuer", "key " + AWS_KEY_ID + " leaked"),
        ("token.jti", BEARER),
        ("token.fingerprint", BEARER),
        ("token.alg", "bearer " + "x" * 12),
        ("token.audience", ["https://mcp.acme.example/crm", JWT]),
        ("token.scopes", ["crm:read", BEARER]),
        ("principal.tenant", JWT),
    ],
)
def test_raw_credential_in_token_or_principal_is_rejected(path: str, value: Any) -> None:
    part = path.split(".")[0]
    for reason in reject_both(setpath(example("mcp.tool_call"), path, value)):
        assert "privacy" in reason
        assert part in reason


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("principal.client_id", "https://github.com/apps/assistant"),
        ("principal.subject", "ghost@acme.example"),
        ("token.jti", "eyJ-not-a-jwt"),
        ("token.alg", "opaque"),
        ("principal.subject", "bearer-of-news@acme.example"),
    ],
)
def test_ordinary_values_are_not_mistaken_for_credentials(path: str, value: Any) -> None:
    accept_both(setpath(example("mcp.tool_call"), path, value))


def test_credentials_outside_token_and_principal_are_not_rejected() -> None:
    # spec: tool.arguments and attributes are the producer's to redact
    ex = example("mcp.tool_call")
    ex["tool"]["arguments"]["authorization"] = BEARER
    ex["attributes"] = {"note": JWT}
    accept_both(ex)


@pytest.mark.parametrize(
    "value",
    [
        "79900b60ce286dfd55ccab0d94b0113260c03b3916ba70993e48dc7de726930a",
        "sha256",
        "sha256:",
        "sha256:abc",
        ":79900b60ce286dfd55ccab0d94b0113260c03b3916ba70993e48dc7de726930a",
        "SHA256:79900b60ce286dfd55ccab0d94b0113260c03b3916ba70993e48dc7de726930a",
        "sha256 79900b60ce286dfd55ccab0d94b0113260c03b3916ba70993e48dc7de726930a",
        "sha256:79900b60ce286dfd55ccab0d94b0113260c03b3916ba70993e48dc7de726930a\n",
        "sha256:79900b60ce286dfd55ccab0d94b0113260c03b3916ba70993e48dc7de726930a:x",
        "",
    ],
)
def test_fingerprint_not_algo_colon_digest_is_rejected(value: str) -> None:
    assert_rejected_naming(setpath(example("auth.token"), "token.fingerprint", value), "fingerprint")


@pytest.mark.parametrize(
    "value",
    [
        "sha256:79900b60ce286dfd55ccab0d94b0113260c03b3916ba70993e48dc7de726930a",
        "hmac-sha256:eZCLYM4obf1VzKsNlLARMmDAOzkWunCZPkjcfecmkwo=",
        "blake2b:0123456789abcdef0123",
    ],
)
def test_fingerprint_of_form_algo_colon_digest_is_accepted(value: str) -> None:
    accept_both(setpath(example("auth.token"), "token.fingerprint", value))


# --------------------------------------------------------------------------
# payload per type


@pytest.mark.parametrize(
    ("etype", "field"),
    [
        ("mcp.tool_call", "tool"),
        ("mcp.tools_list", "tools"),
        ("auth.token", "token"),
        ("auth.token_issued", "token"),
        ("auth.token_revoked", "token"),
        ("auth.client_registered", "principal"),
        ("auth.client_metadata", "principal"),
        ("mcp.resource_read", "resource"),
        ("mcp.prompt_get", "prompt"),
    ],
)
def test_required_payload_per_type(etype: str, field: str) -> None:
    ex = example(etype)
    del ex[field]
    assert_rejected_naming(ex, etype, field)
    ex[field] = None
    assert_rejected_naming(ex, etype, field)


def test_token_revoked_needs_fingerprint_or_jti() -> None:
    ex = example("auth.token_revoked")
    ex["token"] = {"audience": ["https://mcp.acme.example/crm"], "alg": "RS256"}
    assert_rejected_naming(ex, "fingerprint", "jti")
    ex["token"] = {}
    assert_rejected_naming(ex, "fingerprint", "jti")
    only_jti = example("auth.token_revoked")
    del only_jti["token"]["fingerprint"]
    accept_both(only_jti)
    only_fp = example("auth.token_revoked")
    del only_fp["token"]["jti"]
    accept_both(only_fp)


@pytest.mark.parametrize("etype", ["auth.client_registered", "auth.client_metadata"])
@pytest.mark.parametrize("principal", [{}, {"client_id": ""}, {"subject": "dana@acme.example"}])
def test_client_events_need_a_client_id(etype: str, principal: dict[str, Any]) -> None:
    assert_rejected_naming(setpath(example(etype), "principal", principal), "client_id")


def test_tools_list_may_be_empty() -> None:
    record, model = accept_both(setpath(example("mcp.tools_list"), "tools", []))
    assert record.tools == [] and model.tools == []


def test_minimal_tool_definition_and_call() -> None:
    ex = example("mcp.tools_list")
    ex["tools"] = [{"name": "ping"}]
    accept_both(ex)
    call = example("mcp.tool_call")
    call["tool"] = {"name": "ping"}
    accept_both(call)


# --------------------------------------------------------------------------
# auth.token outcome reasons


@pytest.mark.parametrize("reason", ["nope", "expired_token", "WRONG_AUDIENCE", "", "wrong audience"])
def test_denied_reason_outside_the_spec_list_is_rejected(reason: str) -> None:
    ex = setpath(example("auth.token"), "outcome", {"status": "denied", "reason": reason})
    assert_rejected_naming(ex, "reason")


@pytest.mark.parametrize("reason", sorted(DENIED_REASONS))
def test_denied_reason_in_the_spec_list_is_accepted(reason: str) -> None:
    record, model = accept_both(setpath(example("auth.token"), "outcome", {"status": "denied", "reason": reason}))
    assert record.outcome.reason == model.outcome.reason == reason


def test_other_is_an_accepted_denied_reason() -> None:
    assert "other" in DENIED_REASONS
    accept_both(setpath(example("auth.token"), "outcome", {"status": "denied", "reason": "other"}))


def test_denied_without_reason_and_free_reason_elsewhere_are_accepted() -> None:
    accept_both(setpath(example("auth.token"), "outcome", {"status": "denied"}))
    # the list only constrains a *denied* auth.token
    accept_both(setpath(example("auth.token"), "outcome", {"status": "error", "reason": "jwks_timeout"}))
    accept_both(setpath(example("mcp.tool_call"), "outcome", {"status": "denied", "reason": "policy"}))


# --------------------------------------------------------------------------
# annotations


@pytest.mark.parametrize("hint", ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"])
@pytest.mark.parametrize("value", ["true", 1, 0, 1.0, [], {}])
@pytest.mark.parametrize("where", ["tools.0.annotations", "tool.annotations"])
def test_annotation_hints_must_be_booleans(hint: str, value: Any, where: str) -> None:
    ex = example("mcp.tools_list" if where.startswith("tools") else "mcp.tool_call")
    setpath(ex, f"{where}.{hint}", value)
    assert_rejected_naming(ex, hint)


@pytest.mark.parametrize("value", [True, False, None])
def test_annotation_hints_may_be_boolean_or_null(value: Any) -> None:
    ex = example("mcp.tools_list")
    ex["tools"][0]["annotations"] = {"readOnlyHint": value, "destructiveHint": value, "title": "x", "custom": 3}
    accept_both(ex)


# --------------------------------------------------------------------------
# garbage never escapes as anything but InvalidEvent

LINE = EXAMPLE_LINES[6]

GARBAGE = [
    b"",
    b" ",
    b"{",
    b"}",
    b"null",
    b"true",
    b"0",
    b"1e999",
    b"[1]",
    b"[]",
    b"{}",
    b'"x"',
    b"\xff",
    b"\xff\xfe\x00",
    b'{"a":"\xff"}',
    b'{"schema": "\xff\xfe"}',
    b'{"schema": "\\ud800"}',
    b"\xef\xbb\xbf{}",
    b"{} {}",
    b'{"a": NaN}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    LINE[:-1],
    LINE + b"x",
    LINE.replace(b'"size": 412', b'"size": 1e999'),
    LINE[:-1] + b', "extra": "\xff"}',
    LINE[:-1] + b', "extra": "\\ud800"}',
    LINE[:-1] + b', "extra": "\\udc00\\ud800"}',
    LINE[:-1] + b', "extra": NaN}',
    LINE[:-1] + b', "extra": 1e999}',
    LINE[:-1] + b', "extra": [}',
    LINE[:-1] + b', "extra": 1} trailing',
    LINE.replace(b'"schema"', b'"extra": 1, "schema"', 1).replace(b'"crm-mcp"', b'"\xc3\x28"', 1),
]


@pytest.mark.parametrize("raw", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_raises_only_invalid_event(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(raw)


@pytest.mark.parametrize("raw", ['"\ud800"', '{"schema": "\ud800"}', LINE.decode()[:-1] + ', "extra": "\ud800"}'])
def test_garbage_str_raises_only_invalid_event(raw: str) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(raw)


@pytest.mark.parametrize("value", [None, [], "x", 1, [EXAMPLES[0]]])
def test_event_from_dict_rejects_non_objects(value: Any) -> None:
    with pytest.raises(InvalidEvent):
        event_from_dict(value)


def test_big_integers_keep_their_value_on_both_paths() -> None:
    # beyond 64 bits: exact on both paths, with or without an unknown field
    big = 2**70
    for raw in (
        LINE.replace(b'"arguments": {', b'"arguments": {"n": %d, ' % big),
        LINE[:-1] + b', "extra": %d}' % big,
        LINE[:-1] + b', "extra": %d}' % -big,
    ):
        record, model = accept_both(raw)
        values = [v for v in [*(record.tool.arguments or {}).values(), *(record.attributes or {}).values()] if isinstance(v, int)]
        assert values and all(abs(v) == big for v in values)


def _verdicts(raw: bytes | str) -> tuple[bool, bool]:
    try:
        decode_event(raw)
        fast = True
    except InvalidEvent:
        fast = False
    try:
        Event.model_validate_json(raw)
        slow = True
    except pydantic.ValidationError:
        slow = False
    return fast, slow


DEEP = [
    lambda n: LINE.replace(b'"arguments": {', b'"arguments": {"d": ' + b"[" * n + b"]" * n + b", "),
    lambda n: LINE.replace(b'"arguments": {', b'"arguments": {"d": ' + b'{"a": ' * n + b"null" + b"}" * n + b", "),
    lambda n: LINE[:-1] + b', "extra": ' + b"[" * n + b"]" * n + b"}",
    lambda n: LINE[:-1] + b', "attributes": {"x": ' + b"[{}," * n + b"0" + b"]" * n + b"}}",
]
DEEP_IDS = ["arguments-arrays", "arguments-objects", "unknown-field", "attributes-mixed"]


@pytest.mark.parametrize("make", DEEP, ids=DEEP_IDS)
def test_nesting_agrees_below_200_and_far_beyond(make: Any) -> None:
    assert _verdicts(make(150)) == (True, True)
    assert _verdicts(make(150).decode()) == (True, True)
    # msgspec stops at the interpreter's recursion limit: InvalidEvent, no RecursionError
    assert _verdicts(make(3000)) == (False, False)
    assert _verdicts(make(3000).decode()) == (False, False)


@pytest.mark.parametrize("make", DEEP, ids=DEEP_IDS)
def test_nesting_between_200_and_the_recursion_limit_is_accepted_like_the_model(make: Any) -> None:
    # pydantic's own JSON *parser* stops at 200 levels; that is a parser limit,
    # not the model's: validating the parsed object, the model accepts, and so
    # does the fast path (spec/events.md sets no depth limit)
    raw = make(250)
    decode_event(raw)
    Event.model_validate(msgspec.json.decode(raw))


@pytest.mark.parametrize(
    "raw",
    [
        LINE.replace(b'{"schema"', b'{"type": "bad", "schema"', 1),
        LINE.replace(b'{"schema"', b'{"attributes": 5, "schema"', 1),
        LINE.replace(b'"source": {"kind": "server",', b'"source": {"kind": "nope", "kind": "server",', 1),
        LINE.replace(b'{"schema"', b'{"tenant": "zzz", "schema"', 1),
        LINE.replace(b'"trace":', b'"type": "bad", "trace":', 1),
        LINE.replace(b'{"schema"', b'{"x": 1, "x": 2, "schema"', 1),
    ],
    ids=["bad-then-good", "bad-attributes-then-none", "nested-bad-then-good", "good-then-good", "good-then-bad", "unknown-twice"],
)
def test_duplicate_keys_resolve_like_pydantic(raw: bytes) -> None:
    # JSON leaves repeated member names to the reader; pydantic keeps the last
    fast, slow = _verdicts(raw)
    assert fast == slow
    if fast:
        accept_both(raw)


@pytest.mark.parametrize(
    "raw",
    [LINE.replace(b"38.2", b"1e400"), LINE[:-1] + b', "extra": NaN}', LINE[:-1] + b', "extra": -Infinity}'],
    ids=["overflow", "nan", "infinity"],
)
def test_non_json_numbers_are_rejected_with_a_reason(raw: bytes) -> None:
    # NaN, Infinity and out-of-range numbers are not JSON (RFC 8259); pydantic's
    # lenient parser reads them, the pipeline refuses them as invalid JSON
    with pytest.raises(InvalidEvent, match="JSON|number|range"):
        decode_event(raw)
