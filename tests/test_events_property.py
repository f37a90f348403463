"""Property tests: the two views of the event schema are one schema.

(a) nothing but ``InvalidEvent`` / ``pydantic.ValidationError`` escapes for any
    JSON value;
(b) on near-valid events (the spec examples with 0-3 random mutations) the
    msgspec fast path and the pydantic model give the same verdict and read
    the same values;
(c) canonical JSON and the hashes built on it do not depend on key order.

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpsift import canonical
from tests.helpers.event_views import EXAMPLES, TIMESTAMP_PATHS, model_view, record_view, tagged
from mcpsift.events import (
    DENIED_REASONS,
    EVENT_TYPES,
    Event,
    EventRecord,
    InvalidEvent,
    decode_event,
    event_from_dict,
)

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------
# strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkYW5hIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
SPECIAL_VALUES = [
    None, True, False, 0, 1, -1, 0.0, -0.0, 1.0, 38.5, -2.5, 2**63, -(2**63), "", " ", "x", "default",
    "mcpsift.event/1", "mcpsift.event/2", "ok", "denied", "error", "other", "nope", "server", "gateway",
    "stdio", "sse", "websocket", "2026-11-20T09:00:01Z", "2026-11-20T09:00:01",
    "sha256:79900b60ce286dfd55ccab0d94b0113260c03b3916ba70993e48dc7de726930a", "sha256:abc",
    JWT, "Bearer 8f14e45fceea167a5a36dedd", "AKIAIOSFODNN7EXAMPLE", "ghp_" + "a" * 36,
    [], {}, ["a"], [1], {"name": "t"}, {"readOnlyHint": True}, {"readOnlyHint": "yes"},
    [{"name": "t"}], [{"name": ""}], {"uri": "crm://x"}, {"status": "denied", "reason": "expired"},
]
# deep-copied: a drawn value may be mutated by a later mutation
interesting = (st.sampled_from(SPECIAL_VALUES) | json_values).map(copy.deepcopy)

TIME_VARIANTS = [
    "2026-11-20T09:00:01Z",
    "2026-11-20T09:00:01.5Z",
    "2026-11-20T09:00:01.123456789Z",
    "2026-11-20T09:00:01+02:00",
    "2026-11-20T09:00:01-00:00",
    "2026-11-20 09:00:01+02:00",
    "2026-11-20t09:00:01z",
    "2026-11-20T09:00:01+0200",
    "2026-11-20T09:00:01",
    "2026-11-20T09:00:01.000",
    "2026-11-20",
    "09:00:01Z",
    "2026-11-20T09:00Z",
    "2026-02-30T09:00:01Z",
    "2026-11-20T23:59:60Z",
    "Fri, 20 Nov 2026 09:00:01 GMT",
    "",
    1763629201,
    1763629201.5,
    None,
]

ENUM_FIELDS: dict[tuple[str, ...], list[Any]] = {
    ("type",): [*EVENT_TYPES, "mcp.unknown"],
    ("schema",): ["mcpsift.event/1", "mcpsift.event/2"],
    ("source", "kind"): ["server", "gateway", "client", "authorization_server", "proxy"],
    ("session", "transport"): ["stdio", "streamable-http", "sse", "other", "ws"],
    ("outcome", "status"): ["ok", "error", "denied", "failed", None],
    ("outcome", "reason"): [*sorted(DENIED_REASONS), "nope", "", None],
}

UNKNOWN_KEYS = st.sampled_from(
    ["extra", "x-gateway", "toplevel.extra", "schema_", "Schema", "attributes", "tenant", "name", "kind",
     "subject", "readOnlyHint", "uri", "fingerprint", "jti", "status", "size", ""]
) | st.text(max_size=6)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key / index path inside ``value``."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*prefix, i))
            out.extend(_paths(v, (*prefix, i)))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _retype(value: Any, choice: int) -> Any:
    """A value of another JSON type carrying (roughly) the same content."""
    if isinstance(value, bool):
        return [int(value), str(value).lower(), [value]][choice % 3]
    if isinstance(value, int):
        return [float(value), str(value), value != 0, [value]][choice % 4]
    if isinstance(value, float):
        return [int(value), str(value), [value], {"value": value}][choice % 4]
    if isinstance(value, str):
        return [[value], {"value": value}, len(value), None][choice % 4]
    if isinstance(value, list):
        return [value[0] if value else None, {str(i): v for i, v in enumerate(value)}, json.dumps(value), None][choice % 4]
    if isinstance(value, dict):
        return [list(value.values()), list(value.keys()), json.dumps(value), None][choice % 4]
    return [0, "", [], {}][choice % 4]


@st.composite
def near_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        kind = draw(st.sampled_from(["drop", "set", "unknown_top", "unknown_nested", "time", "retype", "enum"]))
        paths = _paths(doc)
        if kind == "drop":
            dict_paths = [p for p in paths if isinstance(_parent(doc, p), dict)]
            if dict_paths:
                path = draw(st.sampled_from(dict_paths))
                del _parent(doc, path)[path[-1]]
        elif kind == "set" and paths:
            path = draw(st.sampled_from(paths))
            _parent(doc, path)[path[-1]] = draw(interesting)
        elif kind == "unknown_top":
            doc[draw(UNKNOWN_KEYS)] = draw(interesting)
        elif kind == "unknown_nested":
            holders = [p for p in paths if isinstance(_parent(doc, p)[p[-1]], dict)]
            if holders:
                path = draw(st.sampled_from(holders))
                _parent(doc, path)[path[-1]][draw(UNKNOWN_KEYS)] = draw(interesting)
        elif kind == "time":
            where = draw(st.sampled_from(TIMESTAMP_PATHS))
            if len(where) == 1 or isinstance(doc.get(where[0]), dict):
                _parent(doc, where)[where[-1]] = draw(st.sampled_from(TIME_VARIANTS))
        elif kind == "retype" and paths:
            path = draw(st.sampled_from(paths))
            holder = _parent(doc, path)
            holder[path[-1]] = _retype(holder[path[-1]], draw(st.integers(min_value=0, max_value=11)))
        elif kind == "enum":
            where, values = draw(st.sampled_from(sorted(ENUM_FIELDS.items())))
            if len(where) == 1:
                doc[where[0]] = draw(st.sampled_from(values))
            else:
                part = doc.setdefault(where[0], {})
                if isinstance(part, dict):
                    part[where[1]] = draw(st.sampled_from(values))
    return doc


def _dumps_with_duplicate(value: Any, where: tuple[Any, ...], key: str, first: Any, at: tuple[Any, ...] = ()) -> str:
    """JSON of ``value`` whose object at path ``where`` repeats ``key``: ``first`` comes first."""
    if isinstance(value, dict):
        pairs = [f"{json.dumps(k)}: {_dumps_with_duplicate(v, where, key, first, (*at, k))}" for k, v in value.items()]
        if at == where:
            pairs.insert(0, f"{json.dumps(key)}: {json.dumps(first)}")
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dumps_with_duplicate(v, where, key, first, (*at, i)) for i, v in enumerate(value)) + "]"
    return json.dumps(value)


@st.composite
def near_valid_raw(draw: st.DrawFn) -> bytes:
    """A near-valid event as JSON bytes, sometimes with a duplicated key.

    JSON with a repeated member name is legal but left to the reader; pydantic
    keeps the last value, so the fast path must too.
    """
    doc = draw(near_valid_events())
    if draw(st.integers(min_value=0, max_value=3)) != 0:  # a duplicate in one of four
        return json.dumps(doc).encode("utf-8")
    holders = [()] + [p for p in _paths(doc) if isinstance(_parent(doc, p)[p[-1]], dict) and _parent(doc, p)[p[-1]]]
    where = draw(st.sampled_from(holders))
    target = doc
    for k in where:
        target = target[k]
    key = draw(st.sampled_from(sorted(target)))
    return _dumps_with_duplicate(doc, where, key, draw(interesting)).encode("utf-8")


# --------------------------------------------------------------------------
# (a) nothing but the documented exceptions escapes


@SETTINGS
@given(json_values)
def test_any_json_value_decodes_or_raises_invalid_event(value: Any) -> None:
    raw = json.dumps(value).encode("utf-8")
    try:
        record = decode_event(raw)
    except InvalidEvent:
        pass
    else:
        assert isinstance(record, EventRecord)
    try:
        model = Event.model_validate(value)
    except pydantic.ValidationError:
        pass
    else:
        assert isinstance(model, Event)


ENVELOPE_KEYS = ["schema", "event_id", "time", "type", "tenant", "source", "server", "principal", "token",
                 "session", "network", "outcome", "trace", "attributes", "tools", "tool", "resource", "prompt"]


@SETTINGS
@given(st.dictionaries(st.sampled_from(ENVELOPE_KEYS) | st.text(max_size=6), interesting, max_size=10))
def test_any_json_object_with_envelope_keys_decodes_or_raises_invalid_event(value: dict[str, Any]) -> None:
    raw = json.dumps(value).encode("utf-8")
    try:
        decode_event(raw)
    except InvalidEvent:
        pass
    try:
        event_from_dict(value)
    except InvalidEvent:
        pass
    try:
        Event.model_validate_json(raw)
    except pydantic.ValidationError:
        pass
    try:
        Event.model_validate(value)
    except pydantic.ValidationError:
        pass


@SETTINGS
@given(st.binary(max_size=64) | st.binary(max_size=8).map(lambda b: json.dumps(EXAMPLES[0]).encode()[:-1] + b', "x": "' + b))
def test_any_bytes_decode_or_raise_invalid_event(raw: bytes) -> None:
    try:
        decode_event(raw)
    except InvalidEvent:
        pass


# --------------------------------------------------------------------------
# (b) both views agree on near-valid events


def _verdict_fast(raw: bytes) -> Any:
    try:
        return record_view(decode_event(raw))
    except InvalidEvent:
        return None


def _verdict_dict(doc: dict[str, Any]) -> Any:
    try:
        return record_view(event_from_dict(doc))
    except InvalidEvent:
        return None


def _verdict_model(raw: bytes) -> Any:
    try:
        return model_view(Event.model_validate_json(raw))
    except pydantic.ValidationError:
        return None


@SETTINGS
@given(near_valid_raw())
def test_fast_path_and_model_agree(raw: bytes) -> None:
    slow = _verdict_model(raw)
    fast = _verdict_fast(raw)
    assert (fast is None) == (slow is None), f"decode_event {'accepts' if fast else 'rejects'}, pydantic {'accepts' if slow else 'rejects'}"
    if fast is not None:
        assert tagged(fast) == tagged(slow)
    parsed = _verdict_dict(json.loads(raw))
    assert (parsed is None) == (slow is None)
    if parsed is not None:
        assert tagged(parsed) == tagged(slow)


def test_near_valid_strategy_produces_both_verdicts() -> None:
    """Guard on the strategy itself: it must reach both sides of the line."""
    accepted = rejected = 0

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(near_valid_events())
    def count(doc: dict[str, Any]) -> None:
        nonlocal accepted, rejected
        if _verdict_model(json.dumps(doc).encode()) is None:
            rejected += 1
        else:
            accepted += 1

    count()
    assert accepted >= 30 and rejected >= 30, (accepted, rejected)


# --------------------------------------------------------------------------
# (c) canonical JSON does not depend on key order

keys = st.text(max_size=6) | st.sampled_from(["a", "b", "A", "é", "\u00ff", "\uffff", "\U0001f600", "10", "2", "a\x00"])
nested_dicts = st.recursive(
    st.dictionaries(keys, json_scalars, max_size=5),
    lambda children: st.dictionaries(keys, children | json_scalars | st.lists(children | json_scalars, max_size=3), max_size=5),
    max_leaves=20,
)


def reorder(value: Any, rnd: random.Random | None) -> Any:
    """``value`` rebuilt with every object's keys inserted reversed (rnd None) or shuffled."""
    if isinstance(value, dict):
        items = list(value.items())
        if rnd is None:
            items.reverse()
        else:
            rnd.shuffle(items)
        return {k: reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [reorder(v, rnd) for v in value]
    return value


@SETTINGS
@given(nested_dicts, st.randoms(use_true_random=False))
def test_canonical_json_ignores_key_order(doc: dict[str, Any], rnd: random.Random) -> None:
    expected = canonical.canonical_json(doc)
    assert canonical.canonical_json(reorder(doc, None)) == expected
    assert canonical.canonical_json(reorder(doc, rnd)) == expected
    assert json.loads(expected) == doc
    assert canonical.arguments_hash(reorder(doc, rnd)) == canonical.arguments_hash(doc) == canonical.sha256_ref(expected)


def _no_floats(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_floats(v) for v in value)
    return not isinstance(value, float)


@SETTINGS
@given(nested_dicts, st.integers(min_value=2**64, max_value=2**80) | st.none())
def test_canonical_json_is_sorted_compact_utf8(doc: dict[str, Any], big: int | None) -> None:
    if big is not None:
        doc = {**doc, "big": big}  # takes the standard-library fallback
    out = canonical.canonical_json(doc)
    assert json.loads(out) == doc
    if _no_floats(doc):  # float spelling is the serialiser's, the rest is fixed
        assert out == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


tool_members = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8)},
    optional={
        "description": st.text(max_size=12) | st.none(),
        "input_schema": nested_dicts | st.none(),
        "annotations": st.dictionaries(st.sampled_from(["readOnlyHint", "destructiveHint", "title"]), st.booleans() | st.text(max_size=4), max_size=3) | st.none(),
    },
)
extra_members = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in canonical.TOOL_DEFINITION_KEYS), json_values, max_size=4
)


@SETTINGS
@given(tool_members, extra_members, st.randoms(use_true_random=False))
def test_definition_hash_covers_only_the_four_members(tool: dict[str, Any], extra: dict[str, Any], rnd: random.Random) -> None:
    expected = canonical.definition_hash(tool)
    with_extra = {**extra, **tool, "definition_hash": "sha256:" + "0" * 64, "title": "ignored"}
    assert canonical.definition_hash(with_extra) == expected
    assert canonical.definition_hash(reorder(with_extra, rnd)) == expected
    assert canonical.definition_hash(reorder(with_extra, None)) == expected
    present = {k: v for k, v in tool.items() if v is not None}
    assert expected == canonical.sha256_ref(canonical.canonical_json(present))
