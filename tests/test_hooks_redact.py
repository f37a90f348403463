"""Redaction and truncation (docs/events.md "Privacy rules"): secret-looking
keys and values become ``[REDACTED:<kind>]``, strings are cut to 4 KiB and
argument objects to 32 KiB, allow/deny key lists, and the result always fits
in an event the pipeline accepts."""

from __future__ import annotations

import time

import orjson
import pytest

from mcpsift.canonical import arguments_hash
from mcpsift.collectors.build import EventFactory
from mcpsift.collectors.redact import Redactor, scrub, secret_kind, truncate_utf8
from mcpsift.collectors.sink import ListSink
from mcpsift.events import decode_event

JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkYW5hIiwiYXVkIjoiY3JtIn0.c2lnbmF0dXJlLXBhcnQtMTIz"
GITHUB = "ghp_" + "Ab1" * 12
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"


@pytest.mark.parametrize(
    "key, kind",
    [
        ("password", "password"),
        ("db_password", "password"),
        ("newPassword", "password"),
        ("passphrase", "password"),
        ("api_key", "api_key"),
        ("apiKey", "api_key"),
        ("X-Api-Key", "api_key"),
        ("access_key", "api_key"),
        ("client_secret", "secret"),
        ("clientSecret", "secret"),
        ("secret", "secret"),
        ("access_token", "token"),
        ("refreshToken", "token"),
        ("id_token", "token"),
        ("X-Auth-Token", "token"),
        ("Authorization", "authorization"),
        ("cookie", "cookie"),
        ("Set-Cookie", "cookie"),
        ("private_key", "private_key"),
        ("credentials", "credential"),
    ],
)
def test_values_under_secret_keys_are_redacted(key, kind):
    out = Redactor().redact({key: "value-1234", "other": "kept"})
    assert out == {key: f"[REDACTED:{kind}]", "other": "kept"}


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "token_count", "pageToken", "next_page_token", "public_key", "password_hint", "token_type",
     "key", "monkey", "secret_name", "author", "auth_url", "session_id", "tokens"],
)
def test_ordinary_keys_are_kept(key):
    assert Redactor().redact({key: "value"}) == {key: "value"}


def test_non_values_under_secret_keys_are_kept():
    assert Redactor().redact({"password": None, "token": "", "auth": True}) == {"password": None, "token": "", "auth": True}
    assert Redactor().redact({"otp": 123456}) == {"otp": "[REDACTED:password]"}


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"use {JWT} now", "use [REDACTED:jwt] now"),
        ("Authorization: Bearer abc123.def456_ghi", "Authorization: Bearer [REDACTED:bearer]"),
        ("authorization: bearer ABCDEFGH12345678", "authorization: bearer [REDACTED:bearer]"),
        ("Authorization: Basic YWxpY2U6c2VjcmV0", "Authorization: Basic [REDACTED:basic_auth]"),
        ("key AKIAIOSFODNN7EXAMPLQ here", "key [REDACTED:aws_access_key] here"),
        (f"token {GITHUB}", "token [REDACTED:github_token]"),
        ("glpat-abcdefghij0123456789", "[REDACTED:gitlab_token]"),
        ("xoxb-1234567890-abcdefghij", "[REDACTED:slack_token]"),
        ("sk_live_abcdefghijklmnop1234", "[REDACTED:stripe_key]"),
        ("export OPENAI=sk-proj-abcdefghijklmnopqrstuvwxyz", "export OPENAI=[REDACTED:api_key]"),
        ("AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", "[REDACTED:google_api_key]"),
        (f"before\n{PRIVATE_KEY}\nafter", "before\n[REDACTED:private_key]\nafter"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow (cut", "[REDACTED:private_key]"),
        ("postgres://app:pa55w0rd@db.internal:5432/crm", "postgres://app:[REDACTED:password]@db.internal:5432/crm"),
        ("select * from users where password='S3cr3t!x'", "select * from users where password='[REDACTED:password]'"),
        ('{"api_key": "Zx81kd9s0LLq"}', '{"api_key": "[REDACTED:api_key]"}'),
        ("db_password = hunter2!x", "db_password = [REDACTED:password]"),
        (f"token={JWT}", "token=[REDACTED:jwt]"),
        (f"max_tokens={JWT}", "max_tokens=[REDACTED:jwt]"),
    ],
)
def test_credentials_inside_strings_are_replaced_in_place(text, expected):
    assert scrub(text) == expected
    assert Redactor().redact({"note": text}) == {"note": expected}


@pytest.mark.parametrize(
    "text",
    [
        "Jordan Lee",
        "bearer authentication is described in Basic information",
        "token: none",
        "password: required",
        "password=${DB_PASSWORD}",
        "api_key=<your-api-key>",
        "the max_tokens=2048 setting",
        "obj.token = build()",
        "see https://example.com/path?page=2",
        "ask the skeleton key holder",
        "a long essay about monkeys and keys: they are not secrets " * 20,
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert scrub(text) == text
    assert secret_kind(text) is None


def test_allow_and_deny_lists():
    redactor = Redactor(allow_keys=["page_token", "Password"], deny_keys=["ssn", "x-internal"])
    out = redactor.redact({"password": "p", "ssn": "123-45-6789", "X-Internal": "v", "note": f"Bearer {JWT}"})
    # allow-listed keys keep their value, but a credential in it is still found
    assert out == {"password": "p", "ssn": "[REDACTED:secret]", "X-Internal": "[REDACTED:secret]", "note": "Bearer [REDACTED:bearer]"}
    assert Redactor(deny_keys={"ssn": "national_id"}).redact({"ssn": "1"}) == {"ssn": "[REDACTED:national_id]"}
    with pytest.raises(TypeError, match="list of key names"):
        Redactor(allow_keys="password")
    with pytest.raises(ValueError, match="at least 64"):
        Redactor(max_string_bytes=10)


def test_strings_are_cut_to_4_kib_after_redaction():
    redactor = Redactor()
    text = "é" * 3000  # 6000 bytes
    cut = redactor.scrub_text(text)
    assert len(cut.encode()) <= 4096
    assert cut.endswith("…[TRUNCATED:6000 bytes]") and cut.startswith("éé")
    assert truncate_utf8("short", 4096) == "short"
    # a credential across the cut is replaced, never half kept
    text = "a" * 4080 + " " + JWT
    cut = redactor.scrub_text(text)
    assert "eyJ" not in cut and len(cut.encode()) <= 4096
    # nested strings too
    out = redactor.redact({"list": [{"deep": "z" * 10000}]})
    assert len(out["list"][0]["deep"].encode()) <= 4096
    assert redactor.redact({"a": {"b": {"c": 1}}}, max_bytes=64) == {"a": {"b": {"c": 1}}}
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    flattened = orjson.dumps(Redactor(max_depth=5).redact(deep)).decode()
    assert "[TRUNCATED:depth]" in flattened


def test_arguments_are_cut_to_the_event_budget():
    redactor = Redactor()
    big = {"content": "x" * 20000, "parts": ["y" * 5000] * 12, "path": "/tmp/a"}
    out = redactor.redact_arguments(big)
    assert len(orjson.dumps(out)) <= 32768 - 4096
    assert out["path"] == "/tmp/a" and out["content"].startswith("xxx")
    many = {f"k{i}": "v" * 100 for i in range(2000)}  # too many names even with the values cut
    out = redactor.redact_arguments(many)
    assert out == {"_truncated": out["_truncated"]} and out["_truncated"].endswith("bytes")
    names = {f"k{i}": "v" * 3000 for i in range(300)}
    out = redactor.redact_arguments(names)
    assert set(out) == set(names) and len(orjson.dumps(out)) <= 32768 - 4096


def test_redacted_arguments_make_a_valid_event_and_keep_the_original_hash():
    factory = EventFactory(ListSink(), server_name="crm-mcp", fingerprint_key=b"k")
    arguments = {"query": "Jordan", "password": "hunter2", "note": f"Bearer {JWT}", "blob": "q" * 50000}
    event = factory.event("mcp.tool_call")
    event["tool"] = {
        "name": "find",
        "arguments": factory.redactor.redact_arguments(arguments),
        "arguments_hash": arguments_hash(arguments),
    }
    raw = orjson.dumps(event)
    decode_event(raw)
    assert len(raw) <= 32768
    assert b"hunter2" not in raw and JWT.encode() not in raw
    assert event["tool"]["arguments_hash"] == arguments_hash(arguments)


def test_secret_kind_guards_token_and_principal_fields():
    assert secret_kind(JWT) == "jwt"
    assert secret_kind(f"Bearer {GITHUB}") in {"github_token", "bearer"}
    assert secret_kind("dana@acme.example") is None
    assert secret_kind("https://assistant.example.com/oauth/client.json") is None
    assert secret_kind("a1b2c3") is None


def test_the_work_per_string_is_bounded():
    redactor = Redactor()
    huge = ("lorem ipsum key: dolor sit amet, token = consectetur " * 20000)[:1_000_000]
    start = time.perf_counter()
    out = redactor.scrub_text(huge)
    elapsed = time.perf_counter() - start
    assert len(out.encode()) <= 4096
    assert elapsed < 0.05, f"scrubbing a 1 MB string took {elapsed * 1000:.1f} ms"
    # repeated short values are remembered clean
    redactor.scrub_text("Berlin office")
    assert "Berlin office" in redactor._clean
