"""Authentication of the API: real JWTs signed with keys made here, served from a
real JWKS endpoint on loopback, against the real app over a chDB store; API
keys; rate limits; the RFC 9728 document; and ``mcpsift serve``'s secure
default (keys printed once, only hashes stored; ``--insecure-local`` refused
off loopback)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from mcpsift.api.app import create_app
from mcpsift.api.auth import ApiAuthenticator, RateLimiter
from mcpsift.settings import Settings
from mcpsift.store.keys import ApiKeys
from mcpsift.streams.embedded import EmbeddedRunner
from tests.fixtures.serve import REPO, ServeProcess, free_port

ISSUER = "https://idp.test"
RESOURCE = "https://mcpsift.test"
METADATA = "https://mcpsift.test/.well-known/oauth-protected-resource"


# -- a real JWKS endpoint ------------------------------------------------------


class JwksServer:
    """Serves ``self.document`` at ``/jwks.json`` on loopback; counts fetches."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SigningKey:
    def __init__(self, kid: str, kind: str = "RS256"):
        self.kid, self.alg = kid, kind
        if kind == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {**jwk, "kid": kid, "alg": kind, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": RESOURCE, "sub": "alice", "iat": now, "exp": now + 300,
                  "roles": ["viewer"], "tenant": "acme"}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": RESOURCE, "sub": "mallory", "iat": now, "exp": now + 300, "roles": ["admin"],
            "tenant": "*", **overrides}


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def api(store_factory: Callable[..., Any], jwks: JwksServer) -> Callable[..., tuple[TestClient, Any]]:
    """``api(**auth_settings)`` -> (a client of the real app with an authenticator, its store)."""

    def make(**auth: Any) -> tuple[TestClient, Any]:
        store = store_factory()
        settings = Settings(auth={"issuer": ISSUER, "jwks_url": jwks.url, "resource": RESOURCE,
                                  "jwks_min_refetch_s": 0.3, **auth})
        runner = EmbeddedRunner(settings, store)  # not started: these tests never ingest
        app = create_app(settings, store, runner, authenticator=ApiAuthenticator(settings, store))
        return TestClient(app, base_url=RESOURCE), store

    return make


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _assert_invalid_token(r: httpx.Response, says: str) -> None:
    assert r.status_code == 401, r.text
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert f'resource_metadata="{METADATA}"' in challenge
    assert says in r.json()["detail"], r.json()


# -- JWTs ----------------------------------------------------------------------


def test_a_valid_token_reads_and_every_bad_one_gets_401_with_a_challenge(api, jwks: JwksServer) -> None:
    rsa_key, ec_key = SigningKey("k-rsa"), SigningKey("k-ec", "ES256")
    jwks.document = {"keys": [rsa_key.jwk, ec_key.jwk]}
    client, _ = api()

    # no credentials: a challenge that points at the metadata, without an error code
    r = client.get("/v1/alerts")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA}"'

    assert client.get("/v1/alerts", headers=_bearer(rsa_key.token())).status_code == 200
    assert client.get("/v1/alerts", headers=_bearer(ec_key.token())).status_code == 200

    now = int(time.time())
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(rsa_key.token(aud="https://other-api.test"))),
                          "audience is not this API")
    # an audience list that does not hold this API's resource either
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(rsa_key.token(aud=["https://a.test", "https://b.test"]))),
                          "audience is not this API")
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(rsa_key.token(aud=None))), "lacks the aud claim")
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(rsa_key.token(exp=now - 120))), "expired")
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(rsa_key.token(exp=None))), "lacks the exp claim")
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(rsa_key.token(nbf=now + 600))), "not valid yet")
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(rsa_key.token(iss="https://evil.test"))),
                          "not issued by the configured issuer")
    # within the leeway (30 s): still accepted
    assert client.get("/v1/alerts", headers=_bearer(rsa_key.token(exp=now - 5))).status_code == 200

    # alg none: no signature at all
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k-rsa"}).encode())
    unsigned = f"{none_header}.{_b64(json.dumps(_claims()).encode())}."
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(unsigned)), "algorithm none is not accepted")

    # HS256 "signed" with the RSA public key as the HMAC secret (the classic key-confusion forgery)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k-rsa"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(rsa_key.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(f"{header}.{payload}.{_b64(mac)}")),
                          "algorithm HS256 is not accepted")

    # a token signed by a key the issuer never published, under a kid it does not know
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(SigningKey("k-stranger").token())), "kid) is unknown")
    # ... or under a kid it does know: the signature does not verify
    impostor = SigningKey("k-rsa")
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(impostor.token())), "signature or format is invalid")
    # a token whose header names RS256 but whose JWK says ES256
    mixed = jwt.encode(_claims(), rsa_key.private, algorithm="RS256", headers={"kid": "k-ec"})
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(mixed)), "does not match its signing key")

    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer("not.a.jwt")), "malformed token")
    # a header the caller wrote never reaches the response headers raw (no header injection)
    evil = f"{_b64(json.dumps({'alg': 'RS256' + chr(13) + chr(10) + 'X-Evil: 1'}).encode())}.{payload}.sig"
    r = client.get("/v1/alerts", headers=_bearer(evil))
    _assert_invalid_token(r, "is not accepted")
    assert "x-evil" not in r.headers and "\n" not in r.headers["www-authenticate"]
    r = client.get("/v1/alerts", headers={"authorization": "Basic YWxpY2U6c2VjcmV0"})
    _assert_invalid_token(r, "use the Bearer scheme")
    # nothing in any answer names SQL, a stack or a Python exception
    assert "Traceback" not in r.text and "SELECT" not in r.text


def test_key_rotation_new_kid_accepted_after_a_rate_limited_refetch(api, jwks: JwksServer) -> None:
    old, new = SigningKey("2026-01"), SigningKey("2026-02")
    jwks.document = {"keys": [old.jwk]}
    client, _ = api(jwks_min_refetch_s=0.5)
    assert client.get("/v1/alerts", headers=_bearer(old.token())).status_code == 200
    assert jwks.fetches == 1
    # cached: more requests do not fetch again
    for _ in range(3):
        assert client.get("/v1/alerts", headers=_bearer(old.token())).status_code == 200
    assert jwks.fetches == 1

    # the issuer rotates: publishes the new key, drops the old one
    time.sleep(0.6)
    jwks.document = {"keys": [new.jwk]}
    assert client.get("/v1/alerts", headers=_bearer(new.token())).status_code == 200
    assert jwks.fetches == 2
    # the retired key stops working (after the rotation the cache holds only the new key)
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(old.token())), "kid) is unknown")

    # a flood of unknown kids does not hammer the issuer: at most one refetch per interval
    junk = [SigningKey(f"junk-{i}").token() for i in range(2)]
    before, started = jwks.fetches, time.monotonic()
    for i in range(20):
        _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(junk[i % 2])), "kid) is unknown")
    allowed = 1 + int((time.monotonic() - started) / 0.5)
    assert jwks.fetches - before <= allowed < 20


def test_roles_and_tenant_claims_become_the_principal(api, jwks: JwksServer) -> None:
    key = SigningKey("k1")
    jwks.document = {"keys": [key.jwk]}
    client, _ = api()
    viewer = _bearer(key.token(roles=["viewer"]))
    # viewer cannot reach admin routes
    assert client.get("/v1/apikeys", headers=viewer).status_code == 403
    assert client.post("/v1/outputs/siem/redrive", headers=viewer).status_code == 403
    # nor ingest: reading is not writing
    assert client.post("/v1/events", headers=viewer, content=b"{}").status_code == 403
    # a token without any mcpsift role reads nothing
    assert client.get("/v1/alerts", headers=_bearer(key.token(roles=None))).status_code == 403
    # roles can also come as OAuth scopes
    assert client.get("/v1/apikeys", headers=_bearer(key.token(roles=None, scope="openid mcpsift:admin", tenant="*"))).status_code == 200
    # a tenant-scoped admin sees only keys of its tenants, and cannot mint an all-tenant key
    acme_admin = _bearer(key.token(roles=["admin"], tenant="acme"))
    r = client.post("/v1/apikeys", headers=acme_admin, json={"role": "viewer", "all_tenants": True})
    assert r.status_code == 403 and "your own tenants" in r.json()["detail"]
    r = client.post("/v1/apikeys", headers=acme_admin, json={"role": "viewer", "tenants": ["globex"]})
    assert r.status_code == 403
    r = client.post("/v1/apikeys", headers=acme_admin, json={"role": "viewer", "tenants": ["acme"]})
    assert r.status_code == 201 and r.json()["tenants"] == ["acme"]


def test_api_keys_roles_revocation_and_the_metadata_document(api) -> None:
    client, store = api()
    keys = ApiKeys(store)
    _, admin = keys.create(["admin"], None, "ops")
    _, ingest = keys.create(["ingest"], None, "collector")

    # the RFC 9728 document: open, names this resource and the issuer
    r = client.get("/.well-known/oauth-protected-resource")
    assert r.status_code == 200
    doc = r.json()
    assert doc["resource"] == RESOURCE and doc["authorization_servers"] == [ISSUER]
    assert doc["bearer_methods_supported"] == ["header"] and "mcpsift:admin" in doc["scopes_supported"]
    assert "none" not in doc["resource_signing_alg_values_supported"]
    assert "/.well-known/oauth-protected-resource" in client.get("/openapi.json").json()["paths"]

    # an ingest key cannot read
    assert client.get("/v1/alerts", headers=_bearer(ingest)).status_code == 403
    assert client.get("/v1/dead-letters", headers=_bearer(ingest)).status_code == 403
    assert client.get("/v1/outputs", headers=_bearer(ingest)).status_code == 403
    # an admin key can, and manages keys
    assert client.get("/v1/alerts", headers=_bearer(admin)).status_code == 200
    r = client.post("/v1/apikeys", headers=_bearer(admin), json={"role": "viewer", "tenants": ["acme"], "name": "grafana"})
    assert r.status_code == 201
    made = r.json()
    viewer = made["key"]
    assert viewer.startswith(f"msk_{made['key_id']}_") and made["roles"] == ["viewer"]
    listed = client.get("/v1/apikeys", headers=_bearer(admin)).json()
    assert {k["key_id"] for k in listed} >= {made["key_id"]}
    assert viewer not in json.dumps(listed) and all("key" not in k and "key_hash" not in k for k in listed)
    assert client.get("/v1/alerts", headers=_bearer(viewer)).status_code == 200
    assert client.get("/v1/apikeys", headers=_bearer(viewer)).status_code == 403

    # a wrong secret for a real key id, and a malformed key
    forged = viewer[: -4] + ("AAAA" if not viewer.endswith("AAAA") else "BBBB")
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(forged)), "unknown or revoked API key")
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer("msk_nope")), "unknown or revoked API key")

    # revoked: refused at once (the app forgets its cached verification)
    r = client.delete(f"/v1/apikeys/{made['key_id']}", headers=_bearer(admin))
    assert r.status_code == 200 and r.json()["revoked_at"]
    _assert_invalid_token(client.get("/v1/alerts", headers=_bearer(viewer)), "unknown or revoked API key")
    assert client.delete("/v1/apikeys/000000000000", headers=_bearer(admin)).status_code == 404


def test_rate_limit_answers_429_with_retry_after(api) -> None:
    client, store = api(rate_limit_per_s=1, rate_limit_burst=3)
    _, key = ApiKeys(store).create(["viewer"], ["acme"])
    _, other = ApiKeys(store).create(["viewer"], ["acme"])
    codes = [client.get("/v1/alerts", headers=_bearer(key)).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = client.get("/v1/alerts", headers=_bearer(key))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "rate limit" in r.json()["detail"]
    # per key: another key is not slowed down
    assert client.get("/v1/alerts", headers=_bearer(other)).status_code == 200
    time.sleep(1.1)
    assert client.get("/v1/alerts", headers=_bearer(key)).status_code == 200


def test_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    assert limiter.take("a", now=0.0) is None and limiter.take("a", now=0.0) is None
    assert limiter.take("a", now=0.0) == pytest.approx(0.5)
    assert limiter.take("a", now=0.5) is None  # one token back after 1/rate s
    assert RateLimiter(rate=0, burst=1).take("a") is None  # 0 = no limit


def test_half_configured_issuer_and_bad_algorithms_stop_start_up(store_factory) -> None:
    from mcpsift.settings import ConfigError, load_settings

    with pytest.raises(ValueError, match="go together"):
        ApiAuthenticator(Settings(auth={"issuer": ISSUER}), store_factory())
    for bad in (["none"], ["HS256"], ["RS256", "HS512"]):
        with pytest.raises(ConfigError, match="not allowed"):
            load_settings(auth={"algorithms": bad})


# -- mcpsift serve: secure by default ------------------------------------------


def _stored_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".log"))


def test_first_start_prints_keys_once_and_stores_only_hashes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPSIFT_")}
    env["PYTHONPATH"] = str(REPO)
    server = ServeProcess(data_dir, env)
    server.env.pop("MCPSIFT_AUTH__BOOTSTRAP_KEYS_FILE")  # the plain default: keys only on stderr
    server.start()
    first = server.output()
    keys = dict(
        (line.split()[0], line.split()[-1]) for line in first.splitlines() if line.strip().split(" ")[0] in ("admin", "ingest")
        and "msk_" in line
    )
    assert set(keys) == {"admin", "ingest"} and "shown ONCE" in first, first
    admin, ingest = keys["admin"], keys["ingest"]
    assert first.count(admin) == 1 and first.count(ingest) == 1

    assert httpx.get(server.url + "/v1/alerts").status_code == 401
    assert httpx.get(server.url + "/v1/alerts", headers=_bearer(admin)).status_code == 200
    assert httpx.get(server.url + "/v1/alerts", headers=_bearer(ingest)).status_code == 403
    r = httpx.post(server.url + "/v1/events", headers=_bearer(ingest), content=b'{"nope": 1}\n')
    assert r.status_code == 422  # authenticated; the event itself was invalid
    health = httpx.get(server.url + "/healthz").json()  # open, counters only
    assert health["status"] == "ok" and "tenant" not in json.dumps(health)
    assert server.stop() in (0, -15)

    # a later start prints how many keys exist, never the keys
    server.start()
    again = server.output()
    assert admin not in again and ingest not in again and "2 active API key(s)" in again, again
    assert httpx.get(server.url + "/v1/alerts", headers=_bearer(admin)).status_code == 200
    assert server.stop() in (0, -15)

    # no key secret in any stored byte (ClickHouse parts, metadata, spools), nor in what the store answers
    stored = _stored_bytes(data_dir)
    for key in (admin, ingest):
        secret = key.rsplit("_", 1)[1]
        assert secret.encode() not in stored and key.encode() not in stored
    listing = subprocess.run([sys.executable, "-m", "mcpsift.cli", "apikey", "list", "--json", "--data-dir", str(data_dir)],
                             capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert sorted(r["roles"][0] for r in rows) == ["admin", "ingest"] and all(r["all_tenants"] for r in rows)
    assert admin.split("_")[1] in {r["key_id"] for r in rows}
    assert admin not in listing.stdout and ingest not in listing.stdout


def test_insecure_local_is_refused_off_loopback_and_warns_on_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPSIFT_")}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "mcpsift.cli", "serve", "--insecure-local", "--data-dir", str(tmp_path / "d")]
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        run = subprocess.run([*cmd, "--host", host, "--port", str(free_port())], capture_output=True, text=True,
                             timeout=120, env=env, cwd=REPO)
        assert run.returncode == 2, run.stderr
        assert f"--insecure-local refused on {host}" in run.stderr and "Bind to 127.0.0.1" in run.stderr
    assert not (tmp_path / "d").exists()  # refused before touching the data dir

    port = free_port()
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(url + "/v1/alerts").status_code == 200  # no auth at all: that is the point of the flag
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0].decode()
    assert "WARNING: --insecure-local: NO AUTHENTICATION" in output
    assert "msk_" not in output  # no keys made in insecure mode
