"""How a request becomes a :class:`~mcpsift.api.security.Principal`: bearer JWTs
from the configured issuer, and mcpsift API keys.

``Authorization: Bearer msk_<id>_<secret>`` is an API key (looked up by id,
compared by hash, constant time); any other bearer token is a JWT, accepted
only when an issuer and its JWKS are configured, and only when

- its header ``alg`` is in ``auth.algorithms`` (asymmetric only: never
  ``none``, never HS*), and it matches the JWK that signed it;
- its ``kid`` names a key of the issuer's JWKS (fetched, cached for
  ``auth.jwks_cache_s``, refetched at most every ``auth.jwks_min_refetch_s``
  when a token names an unknown ``kid``: key rotation);
- ``iss`` is the issuer, ``aud`` is this API's own resource URI (RFC 8707:
  a token minted for another API is refused), ``exp`` / ``nbf`` hold within
  ``auth.leeway_s``.

Missing or bad credentials answer 401 with ``WWW-Authenticate: Bearer
resource_metadata="…"`` (plus ``error="invalid_token"`` when a token was
sent), pointing at the RFC 9728 document this app serves at
``/.well-known/oauth-protected-resource``. Each key / token subject has a
token bucket (``auth.rate_limit_per_s``); an empty bucket answers 429 with
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from mcpsift.settings import Settings
from mcpsift.store import Store
from mcpsift.store.keys import KEY_PREFIX, ApiKey, ApiKeys, hash_key

from .security import ROLES, Principal, TenantScope

__all__ = [
    "WELL_KNOWN",
    "ApiAuthenticator",
    "RateLimiter",
    "BootstrapReport",
    "bootstrap_keys",
    "identity_provider_configured",
    "metadata_url",
    "protected_resource_metadata",
    "resource_uri",
]

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def resource_uri(settings: Settings) -> str:
    """This API's resource URI: ``auth.resource``, else ``http://<host>:<port>``."""
    if settings.auth.resource:
        return settings.auth.resource
    host = settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def metadata_url(resource: str) -> str:
    """Where RFC 9728 puts the metadata of ``resource``: the well-known path
    inserted between the origin and the resource's path."""
    parts = urlsplit(resource)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{path}"


def identity_provider_configured(settings: Settings) -> bool:
    return bool(settings.auth.issuer or settings.auth.jwks_url)


def protected_resource_metadata(settings: Settings) -> dict[str, Any]:
    """The RFC 9728 protected-resource metadata document of this API."""
    doc: dict[str, Any] = {
        "resource": resource_uri(settings),
        "authorization_servers": [settings.auth.issuer] if settings.auth.issuer else [],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [f"mcpsift:{role}" for role in ROLES],
        "resource_name": "mcpsift audit and incident-response API",
    }
    if settings.auth.issuer:
        doc["resource_signing_alg_values_supported"] = list(settings.auth.algorithms)
    return doc


# -- rate limiting -------------------------------------------------------------


class RateLimiter:
    """A token bucket per caller, in memory (per process): ``rate`` requests per
    second, bursts up to ``burst``. ``rate == 0`` disables it."""

    _MAX_CALLERS = 100_000

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: str, now: Optional[float] = None) -> Optional[float]:
        """None when ``caller`` may go ahead, else the seconds until it may."""
        if self.rate <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                wait = None
            else:
                self._buckets[caller] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self._MAX_CALLERS:
                self._buckets.popitem(last=False)  # forget the longest idle
        return wait


# -- JWKS ----------------------------------------------------------------------


class JwksUnavailable(RuntimeError):
    pass


class _Jwks:
    """The issuer's signing keys by ``kid``: fetched, cached, refetched on an
    unknown ``kid`` (rotation) no more often than ``min_refetch_s``."""

    def __init__(self, url: str, cache_s: float, min_refetch_s: float):
        self.url = url
        self.cache_s = cache_s
        self.min_refetch_s = min_refetch_s
        self.keys: dict[Optional[str], Any] = {}
        self.fetched_at = -math.inf
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        import httpx
        import jwt

        self.fetched_at = time.monotonic()  # also on failure: a broken IdP is not hammered
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
                response = await client.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise JwksUnavailable(f"cannot fetch the issuer's signing keys: {type(exc).__name__}") from None
        keys: dict[Optional[str], Any] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
                continue  # encryption keys and symmetric keys never verify a token here
            try:
                keys[entry.get("kid")] = jwt.PyJWK.from_dict(entry)
            except jwt.PyJWTError:
                continue  # an algorithm this build cannot use; the others still work
        self.keys = keys

    async def key(self, kid: Optional[str]) -> Optional[Any]:
        async with self._lock:
            age = time.monotonic() - self.fetched_at
            if age > self.cache_s:
                await self._fetch()
            elif self._find(kid) is None and age >= self.min_refetch_s:
                await self._fetch()  # an unknown kid: the issuer may have rotated its keys
            return self._find(kid)

    def _find(self, kid: Optional[str]) -> Optional[Any]:
        if kid is None:
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)


# -- the authenticator ---------------------------------------------------------


class ApiAuthenticator:
    """``app.state.authenticator`` of a secured app (see the module docstring)."""

    def __init__(self, settings: Settings, store: Store):
        auth = settings.auth
        if bool(auth.issuer) != bool(auth.jwks_url):
            raise ValueError(
                "auth.issuer and auth.jwks_url go together: set both to accept the issuer's JWTs, or neither for API keys only"
            )
        self.settings = settings
        self.keys = ApiKeys(store)
        self.resource = resource_uri(settings)
        self.audience = auth.audience or self.resource
        self.metadata = metadata_url(self.resource)
        self.limiter = RateLimiter(auth.rate_limit_per_s, auth.rate_limit_burst)
        self.ingest_limiter = RateLimiter(auth.ingest_rate_limit_per_s, auth.ingest_rate_limit_burst)
        self.jwks = _Jwks(auth.jwks_url, auth.jwks_cache_s, auth.jwks_min_refetch_s) if auth.jwks_url else None
        self._key_cache: dict[str, tuple[float, ApiKey]] = {}

    # what the 401 says
    def _challenge(self, description: Optional[str]) -> HTTPException:
        header = f'Bearer resource_metadata="{self.metadata}"'
        if description is not None:
            # printable ASCII only: parts of it (a token's alg) come from the caller
            quoted = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in description)
            header = f'Bearer error="invalid_token", error_description="{quoted}", resource_metadata="{self.metadata}"'
            detail = f"invalid credentials: {description}"
        else:
            detail = (
                "authentication required: send `Authorization: Bearer <API key or token>` "
                f"(protected-resource metadata: {self.metadata})"
            )
        return HTTPException(401, detail, headers={"WWW-Authenticate": header})

    async def authenticate(self, request: Request) -> Principal:
        cached = getattr(request.state, "principal", None)
        if cached is not None:
            return cached
        header = request.headers.get("authorization")
        if not header:
            raise self._challenge(None)
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise self._challenge("use the Bearer scheme: `Authorization: Bearer <API key or token>`")
        if credential.startswith(KEY_PREFIX):
            principal = await self._api_key(credential)
        else:
            principal = await self._jwt(credential)
        limiter = self.ingest_limiter if principal.roles == {"ingest"} else self.limiter
        wait = limiter.take(principal.subject)
        if wait is not None:
            retry = max(1, math.ceil(wait))
            raise HTTPException(
                429,
                f"rate limit of {limiter.rate:g} requests/s for {principal.subject} "
                f"exceeded; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        request.state.principal = principal
        return principal

    # API keys
    def forget_key(self, key_id: str) -> None:
        """Drop a key from the cache (called when it is revoked through this app)."""
        for cached in [k for k, (_, v) in self._key_cache.items() if v.key_id == key_id]:
            self._key_cache.pop(cached, None)

    async def _api_key(self, presented: str) -> Principal:
        now = time.monotonic()
        cache_key = hash_key(presented)  # the cache never holds a usable key
        hit = self._key_cache.get(cache_key)
        if hit is not None and now - hit[0] < self.settings.auth.key_cache_s:
            key = hit[1]
        else:
            key = await run_in_threadpool(self.keys.verify, presented)
            if key is None:
                self._key_cache.pop(cache_key, None)
                raise self._challenge("unknown or revoked API key")
            if len(self._key_cache) > 10_000:
                self._key_cache.clear()
            self._key_cache[cache_key] = (now, key)
        scope = TenantScope(tenants=None if key.tenants is None else frozenset(key.tenants))
        return Principal(subject=f"apikey:{key.key_id}", roles=frozenset(key.roles), scope=scope, via="api_key")

    # JWTs
    async def _jwt(self, token: str) -> Principal:
        import jwt

        if self.jwks is None:
            raise self._challenge("this server accepts API keys (msk_...) only; no token issuer is configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._challenge("malformed token") from None
        alg = header.get("alg")
        if alg not in self.settings.auth.algorithms:
            raise self._challenge(f"token algorithm {str(alg)[:20]} is not accepted")
        kid = header.get("kid")
        try:
            jwk = await self.jwks.key(kid if isinstance(kid, str) else None)
        except JwksUnavailable as exc:
            raise HTTPException(503, f"{exc}; retry shortly", headers={"Retry-After": "5"}) from None
        if jwk is None:
            raise self._challenge("the token's signing key (kid) is unknown to the issuer's JWKS")
        if getattr(jwk, "_jwk_data", {}).get("alg") not in (None, alg):
            raise self._challenge("the token's algorithm does not match its signing key")
        try:
            claims = jwt.decode(
                token,
                key=jwk.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.settings.auth.issuer,
                leeway=self.settings.auth.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_iat": True},
            )
        except jwt.ExpiredSignatureError:
            raise self._challenge("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise self._challenge("the token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise self._challenge(
                f"the token's audience is not this API; request a token for resource {self.audience} (RFC 8707)"
            ) from None
        except jwt.InvalidIssuerError:
            raise self._challenge("the token was not issued by the configured issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise self._challenge(f"the token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise self._challenge("the token's signature or format is invalid") from None
        return self._principal_of(claims)

    def _principal_of(self, claims: dict[str, Any]) -> Principal:
        auth = self.settings.auth
        raw_roles = claims.get(auth.roles_claim, [])
        named = raw_roles.split() if isinstance(raw_roles, str) else raw_roles if isinstance(raw_roles, list) else []
        scopes = claims.get("scope", "")
        named = list(named) + [s.removeprefix("mcpsift:") for s in (scopes.split() if isinstance(scopes, str) else [])
                               if s.startswith("mcpsift:")]
        roles = frozenset(r for r in named if isinstance(r, str) and r in ROLES)
        raw_tenants = claims.get(auth.tenant_claim)
        tenants = [raw_tenants] if isinstance(raw_tenants, str) else raw_tenants if isinstance(raw_tenants, list) else []
        tenants = [t for t in tenants if isinstance(t, str) and t]
        # no tenant claim: no tenant (never "all"); every tenant must be said explicitly with "*"
        scope = TenantScope(tenants=None) if "*" in tenants else TenantScope(tenants=frozenset(tenants))
        return Principal(subject=str(claims["sub"]), roles=roles, scope=scope, via="jwt")


# -- secure by default: the first start ----------------------------------------


@dataclass
class BootstrapReport:
    #: the keys made now (role -> key), shown once; empty on later starts
    created: dict[str, str]
    #: active keys in the store (after creating any)
    active_keys: int


def bootstrap_keys(store: Store, settings: Settings) -> BootstrapReport:
    """On a store without keys and without a configured identity provider, make
    an ``admin`` and an ``ingest`` key (all tenants); only their hashes are
    stored. With ``auth.bootstrap_keys_file`` set, they are also written there
    (mode 0600) for automation."""
    keys = ApiKeys(store)
    # any key ever made (even all revoked, on purpose) or an identity provider: nothing to bootstrap
    if keys.list() or identity_provider_configured(settings):
        return BootstrapReport(created={}, active_keys=keys.count_active())
    created = {}
    for role in ("admin", "ingest"):
        _, key = keys.create([role], None, name=f"bootstrap {role}", created_by="serve first start")
        created[role] = key
    target: Optional[Path] = settings.auth.bootstrap_keys_file
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(created, handle)
    return BootstrapReport(created=created, active_keys=keys.count_active())
