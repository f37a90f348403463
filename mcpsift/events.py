"""The MCP audit event: spec/events.md (version 1) as code.

Two views of one schema:

* :class:`Event` and its parts are pydantic v2 models. They are the single
  source of truth: the JSON Schema, the API documentation and producers that
  build events in Python use them.
* :data:`EventRecord` is a ``msgspec.Struct`` *generated from those models at
  import time* (:func:`_record_type_for`). The pipeline decodes every incoming
  event with it, because typed msgspec decoding is several times faster than
  pydantic validation and the pipeline reads hundreds of thousands of events a
  second. A hypothesis test (tests/test_events_property.py) proves both views
  accept and reject the same documents and read them to the same values.

Checks that are not a matter of types (cross-field rules per event type, the
privacy rule that no raw credential may appear in ``token`` or ``principal``)
live in :func:`check_event`, which both views call.

Call :func:`decode_event` on raw bytes of one event (a Kafka message, a JSONL
line, one element of an ingest array); it returns an :data:`EventRecord` or
raises :class:`InvalidEvent` whose message says what is wrong and where.
"""

from __future__ import annotations

import datetime as _dt
import re
import types
import typing
from typing import Annotated, Any, Literal, Optional, Union

import annotated_types
import msgspec
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "SCHEMA",
    "EVENT_TYPES",
    "DENIED_REASONS",
    "Event",
    "EventRecord",
    "Source",
    "Server",
    "Principal",
    "Token",
    "Session",
    "Network",
    "Outcome",
    "Trace",
    "ToolDefinition",
    "ToolResult",
    "ToolCall",
    "Resource",
    "Prompt",
    "InvalidEvent",
    "decode_event",
    "peek_time",
    "decode_validated",
    "encode_event",
    "event_from_dict",
    "check_event",
    "to_builtins",
]

SCHEMA = "mcpsift.event/1"

EventType = Literal[
    "auth.challenge",
    "auth.token",
    "auth.token_issued",
    "auth.token_revoked",
    "auth.client_registered",
    "auth.client_metadata",
    "mcp.session_start",
    "mcp.session_end",
    "mcp.tools_list",
    "mcp.tool_call",
    "mcp.resource_read",
    "mcp.prompt_get",
    "mcp.request",
]
EVENT_TYPES: tuple[str, ...] = typing.get_args(EventType)

#: ``outcome.reason`` values an ``auth.token`` with ``outcome.status = denied`` may carry.
DENIED_REASONS = frozenset(
    {
        "expired",
        "invalid_signature",
        "wrong_audience",
        "insufficient_scope",
        "revoked",
        "malformed",
        "unknown_issuer",
        "other",
    }
)

ANNOTATION_HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


class InvalidEvent(ValueError):
    """An event that does not satisfy spec/events.md; ``str()`` is the reason."""


# --------------------------------------------------------------------------
# Timestamps: one parser for both views, so they cannot disagree.

_AwareDatetime = Annotated[_dt.datetime, msgspec.Meta(tz=True)]


def _parse_timestamp(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp needs a time zone (Z or an offset)")
        return value
    if not isinstance(value, str):
        raise ValueError("timestamp must be an RFC 3339 string with a time zone")
    try:
        return msgspec.convert(value, _AwareDatetime)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not an RFC 3339 timestamp with a time zone: {exc}") from None


Timestamp = Annotated[_dt.datetime, BeforeValidator(_parse_timestamp)]


# --------------------------------------------------------------------------
# The pydantic models (source of truth).


class _Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class Source(_Part):
    kind: Literal["server", "gateway", "client", "authorization_server"]
    name: str = Field(min_length=1)
    instance: Optional[str] = None
    version: Optional[str] = None


class Server(_Part):
    name: Optional[str] = None
    resource: Optional[str] = None


class Principal(_Part):
    subject: Optional[str] = None
    issuer: Optional[str] = None
    client_id: Optional[str] = None
    tenant: Optional[str] = None


class Token(_Part):
    fingerprint: Optional[str] = None
    jti: Optional[str] = None
    audience: Optional[list[str]] = None
    scopes: Optional[list[str]] = None
    issued_at: Optional[Timestamp] = None
    expires_at: Optional[Timestamp] = None
    alg: Optional[str] = None
    issuer: Optional[str] = None


class Session(_Part):
    id: Optional[str] = None
    transport: Optional[Literal["stdio", "streamable-http", "sse", "other"]] = None
    protocol_version: Optional[str] = None


class Network(_Part):
    client_ip: Optional[str] = None
    user_agent: Optional[str] = None


class Outcome(_Part):
    status: Optional[Literal["ok", "error", "denied"]] = None
    reason: Optional[str] = None
    error: Optional[str] = None
    duration_ms: Optional[float] = Field(default=None, ge=0)


class Trace(_Part):
    trace_id: Optional[str] = None
    span_id: Optional[str] = None


class ToolDefinition(_Part):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    input_schema: Optional[dict[str, Any]] = None
    # MCP tool annotations: the four hints are booleans (checked in
    # check_event); other members such as ``title`` are kept as they are.
    annotations: Optional[dict[str, Any]] = None
    definition_hash: Optional[str] = None


class ToolResult(_Part):
    size: Optional[int] = Field(default=None, ge=0)
    hash: Optional[str] = None
    excerpt: Optional[str] = None
    is_error: Optional[bool] = None


class ToolCall(_Part):
    name: str = Field(min_length=1)
    arguments: Optional[dict[str, Any]] = None
    arguments_hash: Optional[str] = None
    annotations: Optional[dict[str, Any]] = None
    definition_hash: Optional[str] = None
    result: Optional[ToolResult] = None


class Resource(_Part):
    uri: str
    mime_type: Optional[str] = None
    size: Optional[int] = Field(default=None, ge=0)


class Prompt(_Part):
    name: str


class Event(_Part):
    """One MCP audit event (spec/events.md, "Envelope" and "Event types")."""

    schema_: Literal["mcpsift.event/1"] = Field(alias="schema")
    event_id: str = Field(min_length=1)
    time: Timestamp
    type: EventType
    tenant: str = "default"
    source: Source
    server: Optional[Server] = None
    principal: Optional[Principal] = None
    token: Optional[Token] = None
    session: Optional[Session] = None
    network: Optional[Network] = None
    outcome: Optional[Outcome] = None
    trace: Optional[Trace] = None
    attributes: Optional[dict[str, Any]] = None
    tools: Optional[list[ToolDefinition]] = None
    tool: Optional[ToolCall] = None
    resource: Optional[Resource] = None
    prompt: Optional[Prompt] = None

    @model_validator(mode="before")
    @classmethod
    def _keep_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return _move_unknown_into_attributes(data)
        return data

    @model_validator(mode="after")
    def _check(self) -> "Event":
        check_event(self)
        return self


def _layout(model: type[BaseModel]) -> dict[str, Any]:
    """JSON name -> nested layout (a dict), ``[layout]`` for a list of models, or None."""
    layout: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        inner = info.annotation
        args = [a for a in typing.get_args(inner) if a is not type(None)] or [inner]
        target = args[0]
        sub = None
        if isinstance(target, type) and issubclass(target, BaseModel):
            sub = _layout(target)
        elif typing.get_origin(target) is list:
            (item,) = typing.get_args(target)
            if isinstance(item, type) and issubclass(item, BaseModel):
                sub = [_layout(item)]
        layout[info.alias or name] = sub
    return layout


_EVENT_LAYOUT = _layout(Event)
_EVENT_FIELD_NAMES = frozenset(_EVENT_LAYOUT)


def _relocate(data: dict[str, Any], layout: dict[str, Any], prefix: str, extras: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if key not in layout:
            extras[prefix + key] = value
            continue
        sub = layout[key]
        if isinstance(sub, dict) and isinstance(value, dict):
            value = _relocate(value, sub, f"{prefix}{key}.", extras)
        elif isinstance(sub, list) and isinstance(value, list):
            value = [
                _relocate(item, sub[0], f"{prefix}{key}[{i}].", extras) if isinstance(item, dict) else item
                for i, item in enumerate(value)
            ]
        out[key] = value
    return out


def _move_unknown_into_attributes(data: dict[str, Any]) -> dict[str, Any]:
    """Unknown fields are kept in ``attributes``, not rejected (spec/events.md).

    A top-level field keeps its name; one inside an envelope or payload object
    is kept under its dotted path (``server.region``, ``tools[1].title``).
    Free-form objects (``attributes``, ``tool.arguments``, ``input_schema``,
    ``annotations``) are left as they are.
    """
    extras: dict[str, Any] = {}
    relocated = _relocate(data, _EVENT_LAYOUT, "", extras)
    if not extras:
        return data
    attributes = relocated.get("attributes")
    if attributes is None:
        attributes = {}
    elif isinstance(attributes, dict):
        attributes = dict(attributes)
    else:
        return relocated  # the type error on ``attributes`` is reported as such
    for key, value in extras.items():
        # a value already in attributes under that name wins; the other one is
        # kept under a prefixed name rather than lost
        attributes[key if key not in attributes else f"toplevel.{key}"] = value
    relocated["attributes"] = attributes
    return relocated


# --------------------------------------------------------------------------
# Checks shared by both views.

_SECRET_PATTERNS = [
    ("JWT", r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    ("bearer credential", r"(?:^|\n)\s*(?i:bearer)\s+[^\s\n]{8,}"),
    ("AWS access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("GitLab token", r"\bglpat-[A-Za-z0-9_-]{20,}"),
    ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("API secret key", r"\b(?:sk|rk)[-_](?:live_|test_|proj-|ant-)?[A-Za-z0-9_-]{20,}"),
    ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]
_SECRET_RE = re.compile("|".join(f"(?P<g{i}>{p})" for i, (_, p) in enumerate(_SECRET_PATTERNS)))
# every pattern above contains one of these (case-folded); keep them in step
_SECRET_MARKERS = ("eyj", "bearer", "akia", "asia", "gh", "github_pat_", "glpat-", "xox", "sk-", "sk_", "rk-", "rk_", "aiza", "-----begin")
_FINGERPRINT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}:[A-Za-z0-9+/=_-]{16,}\Z")


def _secret_kind(value: str) -> str | None:
    match = _SECRET_RE.search(value)
    if match is None:
        return None
    return _SECRET_PATTERNS[int(match.lastgroup[1:])][0]  # type: ignore[index]


def _strings(obj: Any, fields: tuple[str, ...]) -> typing.Iterator[tuple[str, str]]:
    for name in fields:
        value = getattr(obj, name)
        if isinstance(value, str):
            yield name, value
        elif isinstance(value, list):
            for item in value:
                yield name, item


_TOKEN_STRING_FIELDS = ("fingerprint", "jti", "audience", "scopes", "alg", "issuer")
_PRINCIPAL_STRING_FIELDS = ("subject", "issuer", "client_id", "tenant")



# Values already found clean, so the scan runs once per distinct principal or
# token rather than once per event (a session repeats them on every call).
# A pure function memoised: both views still agree. Cleared when full.
_CLEAN_PRINCIPALS: dict[tuple[Any, ...], None] = {}
_CLEAN_TOKENS: dict[tuple[Any, ...], None] = {}
_CLEAN_CACHE_MAX = 65_536


def _check_privacy(token: Any, principal: Any) -> None:
    if principal is not None:
        key = (principal.subject, principal.issuer, principal.client_id, principal.tenant)
        if key not in _CLEAN_PRINCIPALS:
            _scan_for_secrets("principal", principal, _PRINCIPAL_STRING_FIELDS)
            if len(_CLEAN_PRINCIPALS) >= _CLEAN_CACHE_MAX:
                _CLEAN_PRINCIPALS.clear()
            _CLEAN_PRINCIPALS[key] = None
    if token is not None:
        audience, scopes = token.audience, token.scopes
        key = (
            token.fingerprint,
            token.jti,
            token.alg,
            token.issuer,
            tuple(audience) if audience is not None else None,
            tuple(scopes) if scopes is not None else None,
        )
        if key not in _CLEAN_TOKENS:
            _scan_for_secrets("token", token, _TOKEN_STRING_FIELDS)
            if token.fingerprint is not None and not _FINGERPRINT_RE.match(token.fingerprint):
                raise InvalidEvent(
                    "token.fingerprint must look like 'sha256:<hex>' (or '<algorithm>:<digest>' for a keyed HMAC)"
                )
            if len(_CLEAN_TOKENS) >= _CLEAN_CACHE_MAX:
                _CLEAN_TOKENS.clear()
            _CLEAN_TOKENS[key] = None


def _scan_for_secrets(part: str, obj: Any, fields: tuple[str, ...]) -> None:
    # Literal markers first (a few microseconds); the full regex only on a hit.
    values = list(_strings(obj, fields))
    lowered = "\n".join(v for _, v in values).lower()
    for marker in _SECRET_MARKERS:
        if marker in lowered:
            break
    else:
        return
    for field, value in values:
        kind = _secret_kind(value)
        if kind:
            raise InvalidEvent(
                f"privacy: {part}.{field} looks like a raw {kind}; send a fingerprint, never the credential"
            )


def _needs(field: str) -> Any:
    def rule(ev: Any) -> None:
        if getattr(ev, field) is None:
            raise InvalidEvent(f"a {ev.type} event needs `{field}`")

    return rule


def _auth_token_rule(ev: Any) -> None:
    if ev.token is None:
        raise InvalidEvent("a auth.token event needs `token`")
    outcome = ev.outcome
    if (
        outcome is not None
        and outcome.status == "denied"
        and outcome.reason is not None
        and outcome.reason not in DENIED_REASONS
    ):
        raise InvalidEvent(
            f"outcome.reason {outcome.reason!r} is not one of {sorted(DENIED_REASONS)} (use 'other')"
        )


def _revoked_rule(ev: Any) -> None:
    token = ev.token
    if token is None:
        raise InvalidEvent("a auth.token_revoked event needs `token`")
    if token.fingerprint is None and token.jti is None:
        raise InvalidEvent("an auth.token_revoked event needs token.fingerprint or token.jti")


def _client_rule(ev: Any) -> None:
    if ev.principal is None:
        raise InvalidEvent(f"a {ev.type} event needs `principal`")
    if not ev.principal.client_id:
        raise InvalidEvent(f"a {ev.type} event needs principal.client_id")


# what each event type cannot do without (spec/events.md "Event types"),
# dispatched by type because this runs on every event
_TYPE_RULES: dict[str, Any] = {
    "auth.token": _auth_token_rule,
    "auth.token_issued": _needs("token"),
    "auth.token_revoked": _revoked_rule,
    "auth.client_registered": _client_rule,
    "auth.client_metadata": _client_rule,
    "mcp.tools_list": _needs("tools"),
    "mcp.tool_call": _needs("tool"),
    "mcp.resource_read": _needs("resource"),
    "mcp.prompt_get": _needs("prompt"),
}


def check_event(ev: Any) -> None:
    """Rules beyond types, for an :class:`Event` or an :data:`EventRecord`.

    Raises ``ValueError`` (``InvalidEvent`` on the fast path) with the reason.
    """
    token = ev.token
    principal = ev.principal
    if token is not None or principal is not None:
        _check_privacy(token, principal)  # also checks the fingerprint's form
    rule = _TYPE_RULES.get(ev.type)
    if rule is not None:
        rule(ev)
    tool = ev.tool
    if tool is not None and tool.annotations:
        _check_annotations(tool.annotations, "tool.annotations")
    tools = ev.tools
    if tools:
        for i, listed in enumerate(tools):
            if listed.annotations:
                _check_annotations(listed.annotations, f"tools[{i}].annotations")


_HINTS = frozenset(ANNOTATION_HINTS)


def _check_annotations(annotations: dict[str, Any], where: str) -> None:
    for hint, value in annotations.items():
        if hint in _HINTS and value is not None and value is not True and value is not False:
            raise InvalidEvent(f"{where}.{hint} must be a boolean, got {type(value).__name__}")


# --------------------------------------------------------------------------
# The fast view, generated from the models above.

_record_types: dict[type, type] = {}


def _convert_annotation(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        return _with_constraints(_convert_annotation(base), meta)
    if origin in (Union, types.UnionType):
        return Union[tuple(_convert_annotation(a) for a in typing.get_args(tp))]  # type: ignore[return-value]
    if origin is list:
        (item,) = typing.get_args(tp)
        return list[_convert_annotation(item)]  # type: ignore[misc]
    if origin is dict:
        key, value = typing.get_args(tp)
        return dict[_convert_annotation(key), _convert_annotation(value)]  # type: ignore[misc]
    if origin is Literal:
        return tp
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _record_type_for(tp)
    if tp is _dt.datetime:
        return _AwareDatetime
    if tp in (str, int, float, bool, type(None)) or tp is Any:
        return tp
    raise TypeError(f"no msgspec equivalent generated for {tp!r}")


def _with_constraints(tp: Any, metadata: list[Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            kwargs["min_length"] = item.min_length
        elif isinstance(item, annotated_types.Ge):
            kwargs["ge"] = item.ge
        elif isinstance(item, BeforeValidator) and item.func is _parse_timestamp:
            continue  # the msgspec datetime type already is that parser
        elif type(item).__module__.startswith(("annotated_types", "pydantic")):
            raise TypeError(f"constraint {item!r} has no generated msgspec equivalent")
    if not kwargs:
        return tp
    if typing.get_origin(tp) is Union:
        # Optional[X] with a constraint: the constraint belongs to X
        return Union[tuple(a if a is type(None) else Annotated[a, msgspec.Meta(**kwargs)] for a in typing.get_args(tp))]  # type: ignore[return-value]
    return Annotated[tp, msgspec.Meta(**kwargs)]


def _record_type_for(model: type[BaseModel]) -> type:
    """A ``msgspec.Struct`` with the fields, defaults and constraints of ``model``."""
    if model in _record_types:
        return _record_types[model]
    fields = []
    for name, info in model.model_fields.items():
        annotation = _with_constraints(_convert_annotation(info.annotation), info.metadata)
        default = info.default if not info.is_required() else msgspec.NODEFAULT
        fields.append((name, annotation, msgspec.field(default=default, name=info.alias or name)))
    record = msgspec.defstruct(
        model.__name__ + "Record",
        fields,
        kw_only=True,
        forbid_unknown_fields=True,
        omit_defaults=True,
        # records never form reference cycles; untracked, they cost the cyclic
        # GC nothing (a measured ~25 % of `mcpsift detect` time otherwise)
        gc=False,
        module=__name__,
    )
    _record_types[model] = record
    return record


EventRecord: Any = _record_type_for(Event)
"""The msgspec twin of :class:`Event`: what the pipeline passes between stages."""

_decoder = msgspec.json.Decoder(EventRecord)
_encoder = msgspec.json.Encoder()


def decode_event(raw: bytes | str) -> Any:
    """Decode and validate one event; return an :data:`EventRecord`.

    Raises :class:`InvalidEvent` with a reason naming the field at fault.
    """
    try:
        record = _decoder.decode(raw)
    except msgspec.ValidationError:
        # Unknown top-level fields (kept in attributes) or a real error: decide
        # on the parsed object, as pydantic does. The typed decoder fails on
        # the first bad occurrence of a duplicated key, where pydantic (and a
        # dict) keep the last one.
        return _decode_with_unknown_fields(raw)  # checked there
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        # msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string
        # (UnicodeEncodeError for a str with lone surrogates)
        raise InvalidEvent(f"not valid JSON: {exc}") from None
    check_event(record)
    return record


def decode_validated(raw: bytes | str) -> Any:
    """Decode bytes that :func:`decode_event` has already accepted (in another
    stage or process of this pipeline), without repeating the checks.

    Never call it on untrusted input: it skips the privacy and payload rules.
    """
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError:  # unknown fields and the like: the full path
        return decode_event(raw)


class _Head(msgspec.Struct, gc=False):
    time: _AwareDatetime


_head_decoder = msgspec.json.Decoder(_Head)


def peek_time(raw: bytes | str) -> Optional[float]:
    """An event's ``time`` (POSIX seconds) read without validating the rest, or None.

    About four times cheaper than :func:`decode_event`: runners that hold
    events back to reorder them hold the raw bytes and validate on release.
    """
    try:
        return _head_decoder.decode(raw).time.timestamp()
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError):
        return None


def _decode_with_unknown_fields(raw: bytes | str) -> Any:
    # The same parser as the typed decode, not orjson: orjson reads integers
    # beyond 64 bits as floats (pydantic keeps them exact) and raises its own
    # JSONDecodeError for input msgspec had not reached yet.
    try:
        data = msgspec.json.decode(raw)
    except msgspec.ValidationError as exc:  # e.g. a number out of range
        raise InvalidEvent(_friendly(str(exc))) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise InvalidEvent(f"not valid JSON: {exc}") from None
    return event_from_dict(data)


def event_from_dict(data: Any) -> Any:
    """Validate an already-parsed JSON object; return an :data:`EventRecord`."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(data).__name__}")
    data = _move_unknown_into_attributes(data)
    try:
        record = msgspec.convert(data, EventRecord)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_friendly(str(exc))) from None
    check_event(record)
    return record


def _friendly(message: str) -> str:
    return message.replace("Object missing required field", "missing required field")


def encode_event(record: Any) -> bytes:
    """The JSON bytes of an :data:`EventRecord` (fields at their default omitted)."""
    return _encoder.encode(record)


def to_builtins(record: Any) -> dict[str, Any]:
    """An :data:`EventRecord` as plain JSON-like Python values."""
    return msgspec.to_builtins(record)
