"""AuditingTokenVerifier: one auth.token event per verification, with the
verdict, a reason from the spec's list, the fingerprint and the claims read
without trusting them; never the token. Real PyJWT tokens (RS256, keys made
here) and a real PyJWT-based SDK verifier; the HTTP path is covered in
test_hooks_mcp_sdk.py."""

from __future__ import annotations

import base64
import logging
import time

import anyio
import jwt
import orjson
import pytest
from mcp.server.auth.provider import AccessToken

from mcpsift.collectors import build, fingerprint_token
from mcpsift.collectors.build import flush_pending
from mcpsift.collectors.sink import ListSink
from mcpsift.collectors.verifier import AuditingTokenVerifier, audit_verifier, deny_reason
from mcpsift.events import DENIED_REASONS, decode_event
from tests.helpers.mcp_server import ISSUER, JWTIssuer, JWTVerifier

RESOURCE = "https://mcp.acme.example/crm"
KEY = b"k-test"


@pytest.fixture(scope="module")
def issuer():
    return JWTIssuer()


def audited(inner, **options):
    sink = ListSink()
    defaults = {
        "server_name": "crm-mcp",
        "server_resource": RESOURCE,
        "tenant": "acme",
        "fingerprint_key": KEY,
        "issuers": [ISSUER],
    }
    defaults.update(options)
    return AuditingTokenVerifier(inner, sink, **defaults), sink


def verify(verifier, token):
    try:
        return anyio.run(verifier.verify_token, token)
    finally:
        flush_pending()  # events are built off the request path; this loop has ended


def only_event(sink, token):
    assert len(sink.events) == 1
    event = sink.events[0]
    decode_event(orjson.dumps(event))
    blob = orjson.dumps(event)
    assert token.encode() not in blob
    if token.count(".") == 2:
        signature = token.split(".")[2]
        if len(signature) > 8:
            assert signature.encode() not in blob
    return event


def test_an_accepted_jwt_is_reported_with_its_claims(issuer):
    verifier, sink = audited(JWTVerifier(issuer, RESOURCE))
    token = issuer.mint(audience=RESOURCE, scopes=["crm:read", "crm:write"], jti="a1b2c3", issued_at=1_790_000_000, lifetime_s=10**9)
    result = verify(verifier, token)
    assert isinstance(result, AccessToken) and result.subject == "dana@acme.example"
    event = only_event(sink, token)
    assert event["type"] == "auth.token"
    assert event["source"] == {"kind": "server", "name": "crm-mcp"}
    assert event["server"] == {"name": "crm-mcp", "resource": RESOURCE}
    assert event["tenant"] == "acme"
    assert event["token"] == {
        "fingerprint": fingerprint_token(token, KEY),
        "jti": "a1b2c3",
        "audience": [RESOURCE],
        "scopes": ["crm:read", "crm:write"],
        "issued_at": "2026-09-21T14:13:20Z",
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_790_000_000 + 10**9)),
        "alg": "RS256",
        "issuer": ISSUER,
    }
    assert event["principal"] == {
        "subject": "dana@acme.example",
        "issuer": ISSUER,
        "client_id": "https://assistant.example.com/oauth/client.json",
    }
    assert event["outcome"]["status"] == "ok" and "reason" not in event["outcome"]
    assert event["outcome"]["duration_ms"] >= 0
    assert event["attributes"] == {"token_location": "header"}


@pytest.mark.parametrize(
    "case, reason",
    [
        ("expired", "expired"),
        ("wrong_audience", "wrong_audience"),
        ("unknown_issuer", "unknown_issuer"),
        ("bad_signature", "other"),
        ("malformed", "malformed"),
        ("alg_none", "invalid_signature"),
        ("opaque", "other"),
    ],
)
def test_a_refused_token_gets_a_reason_from_its_claims(issuer, case, reason):
    verifier, sink = audited(JWTVerifier(issuer, RESOURCE), required_scopes=["crm:read"])
    other = JWTIssuer(issuer="https://evil.example")
    token = {
        "expired": lambda: issuer.mint(audience=RESOURCE, issued_at=int(time.time()) - 7200, lifetime_s=3600),
        "wrong_audience": lambda: issuer.mint(audience="https://mcp.acme.example/billing"),
        "unknown_issuer": lambda: other.mint(audience=RESOURCE),
        "bad_signature": lambda: issuer.mint(audience=RESOURCE, key=other.key),
        "malformed": lambda: "eyJhbGciOiJSUzI1NiJ9.!!!notbase64!!!.c2ln",
        "alg_none": lambda: jwt.encode({"sub": "x", "aud": RESOURCE, "iss": ISSUER}, None, algorithm="none") + "sig",
        "opaque": lambda: "opaque-7d1f0b2e9c4a",
    }[case]()
    assert verify(verifier, token) is None
    event = only_event(sink, token)
    assert event["outcome"]["status"] == "denied"
    assert event["outcome"]["reason"] == reason
    assert event["outcome"]["reason"] in DENIED_REASONS
    assert event["attributes"]["reason_basis"] == ("unknown" if reason == "other" else "claims")
    assert event["token"]["fingerprint"] == fingerprint_token(token, KEY)
    if case == "opaque":
        assert event["token"] == {"fingerprint": fingerprint_token(token, KEY), "alg": "opaque"}
        assert "principal" not in event


class _Explaining:
    """A verifier that says why it refuses."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def verify_token(self, token: str):
        deny_reason(self.reason)
        return None


class _Raising:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def verify_token(self, token: str):
        raise self.exc


def test_the_verifier_can_say_why_or_raise(issuer):
    token = issuer.mint(audience=RESOURCE)
    verifier, sink = audited(_Explaining("revoked"))
    assert verify(verifier, token) is None
    event = only_event(sink, token)
    assert event["outcome"]["reason"] == "revoked" and event["attributes"]["reason_basis"] == "verifier"

    verifier, sink = audited(_Explaining("banana"))  # not a spec reason
    verify(verifier, token)
    assert only_event(sink, token)["outcome"]["reason"] == "other"

    deny_reason("revoked")  # outside an audited verification: nothing happens, nothing raises

    for exc, reason in [
        (jwt.ExpiredSignatureError("Signature has expired"), "expired"),
        (jwt.InvalidAudienceError("aud"), "wrong_audience"),
        (jwt.InvalidSignatureError("sig"), "invalid_signature"),
        (jwt.InvalidIssuerError("iss"), "unknown_issuer"),
        (jwt.DecodeError(f"bad token {token}"), "malformed"),
    ]:
        verifier, sink = audited(_Raising(exc))
        with pytest.raises(type(exc)):
            verify(verifier, token)
        event = only_event(sink, token)  # the message quoting the token is not reported
        assert event["outcome"]["reason"] == reason
        assert event["outcome"]["error"] == type(exc).__name__
        assert event["attributes"]["reason_basis"] == "exception"


class _Accepting:
    def __init__(self, access: AccessToken) -> None:
        self.access = access

    async def verify_token(self, token: str):
        return self.access


def test_an_opaque_token_is_described_by_what_the_verifier_returned():
    token = "opaque-0123456789abcdef"
    access = AccessToken(
        token=token,
        client_id="dyn-7f3a",
        scopes=["crm:read"],
        expires_at=int(time.time()) + 600,
        resource=RESOURCE,
        subject="svc-report",
        claims={"iss": ISSUER, "jti": "j-42", "iat": 1_790_000_000},
    )
    verifier, sink = audited(_Accepting(access))
    assert verify(verifier, token) is access
    event = only_event(sink, token)
    assert event["outcome"]["status"] == "ok"
    assert event["token"]["alg"] == "opaque"
    assert event["token"]["audience"] == [RESOURCE]
    assert event["token"]["scopes"] == ["crm:read"]
    assert event["token"]["jti"] == "j-42"
    assert event["token"]["issued_at"] == "2026-09-21T14:13:20Z"
    assert event["token"]["expires_at"].endswith("Z")
    assert event["principal"] == {"subject": "svc-report", "issuer": ISSUER, "client_id": "dyn-7f3a"}


def test_an_accepted_token_the_sdk_will_refuse_is_reported_denied():
    token = "opaque-0123456789abcdef"

    def access(**kw):
        base = dict(token=token, client_id="c", scopes=["crm:read"], expires_at=int(time.time()) + 600, resource=RESOURCE)
        base.update(kw)
        return AccessToken(**base)

    cases = [
        (access(expires_at=int(time.time()) - 5), {}, "expired"),
        (access(resource="https://mcp.acme.example/billing"), {"validate_resource": True}, "wrong_audience"),
        (access(scopes=["profile"]), {"required_scopes": ["crm:read"]}, "insufficient_scope"),
    ]
    for result, options, reason in cases:
        verifier, sink = audited(_Accepting(result), **options)
        assert verify(verifier, token) is result  # the answer is passed on unchanged
        event = only_event(sink, token)
        assert (event["outcome"]["status"], event["outcome"]["reason"]) == ("denied", reason)
    # without validate_resource the SDK lets a token for another resource in: reported ok, with its audience
    verifier, sink = audited(_Accepting(access(resource="https://mcp.acme.example/billing")))
    event = (verify(verifier, token), only_event(sink, token))[1]
    assert event["outcome"]["status"] == "ok"
    assert event["token"]["audience"] == ["https://mcp.acme.example/billing"]


def test_claims_that_look_like_credentials_are_dropped_not_reported(issuer):
    sneaky = issuer.mint(audience=RESOURCE)
    payload = {"sub": sneaky, "jti": "ghp_" + "a" * 36, "aud": RESOURCE, "iss": ISSUER, "client_id": "cli"}
    token = jwt.encode(payload, issuer.key, algorithm="RS256")
    verifier, sink = audited(JWTVerifier(issuer, RESOURCE))
    verify(verifier, token)
    event = only_event(sink, token)  # valid: the pipeline would dead-letter a JWT in principal
    assert "jti" not in event["token"]
    assert event["principal"] == {"issuer": ISSUER, "client_id": "cli"}
    assert sneaky.encode() not in orjson.dumps(event)


def test_without_a_key_fingerprints_are_plain_sha256_and_a_warning_is_logged_once(issuer, monkeypatch, caplog):
    monkeypatch.delenv("MCPSIFT_FINGERPRINT_KEY", raising=False)
    monkeypatch.setattr(build, "_warned_plain_fingerprint", False)
    token = issuer.mint(audience=RESOURCE)
    with caplog.at_level(logging.WARNING, logger="mcpsift.collectors"):
        verifier, sink = audited(JWTVerifier(issuer, RESOURCE), fingerprint_key=None)
        audited(JWTVerifier(issuer, RESOURCE), fingerprint_key=None)
    warnings = [r for r in caplog.records if "fingerprint_key" in r.getMessage()]
    assert len(warnings) == 1
    verify(verifier, token)
    assert only_event(sink, token)["token"]["fingerprint"] == fingerprint_token(token)

    monkeypatch.setenv("MCPSIFT_FINGERPRINT_KEY", "from-env")
    verifier, sink = audited(JWTVerifier(issuer, RESOURCE), fingerprint_key=None)
    verify(verifier, token)
    assert only_event(sink, token)["token"]["fingerprint"] == fingerprint_token(token, b"from-env")


def test_wrapping_keeps_the_verifier_usable(issuer):
    inner = JWTVerifier(issuer, RESOURCE)
    verifier, sink = audited(inner)
    assert verifier.audience == RESOURCE  # attributes of the wrapped verifier pass through
    assert verifier.stats == {"submitted": 0, "dropped": 0, "failed": 0}

    in_place = JWTVerifier(issuer, RESOURCE)
    sink = ListSink()
    assert audit_verifier(in_place, sink, server_name="crm-mcp", server_resource=RESOURCE, fingerprint_key=KEY) is in_place
    assert isinstance(in_place, JWTVerifier)
    token = issuer.mint(audience=RESOURCE)
    assert anyio.run(in_place.verify_token, token) is not None
    flush_pending()
    assert only_event(sink, token)["outcome"]["status"] == "ok"

    with pytest.raises(TypeError, match="verify_token"):
        AuditingTokenVerifier(object(), ListSink(), server_name="x")
    with pytest.raises(ValueError, match="server_resource"):
        AuditingTokenVerifier(inner, ListSink(), server_name="x", validate_resource=True)
    with pytest.raises(TypeError, match="unexpected keyword"):
        AuditingTokenVerifier(inner, ListSink(), server_name="x", fingerprint="oops")


def test_unverified_decoding_never_trusts_or_chokes():
    from mcpsift.collectors.build import unverified_jwt

    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k1"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(b'{"sub":"x","exp":1}').rstrip(b"=").decode()
    assert unverified_jwt(f"{header}.{payload}.forged") == ({"alg": "RS256", "kid": "k1"}, {"sub": "x", "exp": 1})
    assert unverified_jwt("not-a-jwt") == (None, None)
    assert unverified_jwt("a.b.c") == (None, None)
    assert unverified_jwt(f"{header}.###.sig") == ({"alg": "RS256", "kid": "k1"}, None)
    assert unverified_jwt("x" * 20000 + ".a.b") == (None, None)
