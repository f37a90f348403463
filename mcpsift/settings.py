"""Settings: defaults < YAML config file (``--config``) < ``MCPSIFT_*`` environment.

Use :func:`get_settings` (cached per config file); there is no module-level
settings object, so tests and the CLI can build their own.

Config a user writes is validated strictly: an unknown key, an unknown
detector / rule id or an unknown threshold stops start-up with
:class:`ConfigError`, whose message names the offending key and what is
allowed.
"""

from __future__ import annotations

import contextvars
import functools
import os
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "Settings",
    "DetectorSettings",
    "AuthSettings",
    "KafkaSettings",
    "WorkerSettings",
    "TelemetrySettings",
    "ClickHouseSettings",
    "ConfigError",
    "get_settings",
    "load_settings",
]


class ConfigError(ValueError):
    """Configuration a user wrote is wrong; the message says what and where."""


class DetectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: rule ids to run; ``None`` (the default) runs every registered rule
    enabled: Optional[list[str]] = None
    #: rule ids not to run (applied after ``enabled``)
    disabled: list[str] = Field(default_factory=list)
    #: per-rule thresholds: ``{rule_id: {parameter: value}}``
    thresholds: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: per-tenant overrides of those: ``{tenant: {rule_id: {parameter: value}}}``; a
    #: tenant's value wins over ``thresholds``, which wins over the spec's default
    tenant_thresholds: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


#: asymmetric JWS algorithms a bearer JWT may use; ``none`` and HMAC (HS*) never
#: (a JWKS publishes public keys; an HMAC "key" from it would be a forgery vector)
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class AuthSettings(BaseModel):
    """Who may call the API (docs/operations.md, "Security")."""

    model_config = ConfigDict(extra="forbid")

    #: this API's own resource URI (RFC 8707/9728); default ``http://<host>:<port>``
    resource: Optional[str] = None
    #: the identity provider whose JWTs are accepted (``iss``); unset: API keys only
    issuer: Optional[str] = None
    #: where its signing keys are published (JWKS)
    jwks_url: Optional[str] = None
    #: the ``aud`` a token must carry; default: ``resource`` (a token for another API is refused)
    audience: Optional[str] = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA", "PS256"])
    #: claim holding the caller's tenant (a string or a list; ``*`` = every tenant)
    tenant_claim: str = "tenant"
    #: claim holding mcpsift roles (a list or space-separated; ``scope`` entries ``mcpsift:<role>`` count too)
    roles_claim: str = "roles"
    #: clock skew tolerated on ``exp`` / ``nbf`` / ``iat``, in seconds
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    #: how long fetched signing keys are trusted before a refetch, in seconds
    jwks_cache_s: float = Field(default=300.0, gt=0)
    #: at most one refetch per this many seconds when a token names an unknown ``kid``
    jwks_min_refetch_s: float = Field(default=30.0, ge=0)
    #: requests per second per key / token subject (token bucket; 0 = no limit) and its burst
    rate_limit_per_s: float = Field(default=100.0, ge=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    #: the same for ingest-only keys, which a fleet of MCP servers may share
    ingest_rate_limit_per_s: float = Field(default=2000.0, ge=0)
    ingest_rate_limit_burst: int = Field(default=4000, ge=1)
    #: seconds a verified API key is remembered before the store is asked again
    key_cache_s: float = Field(default=5.0, ge=0)
    #: on first start, also write the generated keys here (JSON, mode 0600), e.g. a secrets volume
    bootstrap_keys_file: Optional[Path] = None

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in JWT_ALGORITHMS]
        if bad:
            raise ValueError(
                f"{', '.join(bad)} not allowed (`none` and HS* are refused); choose from {', '.join(JWT_ALGORITHMS)}"
            )
        if not value:
            raise ValueError(f"give at least one of {', '.join(JWT_ALGORITHMS)}")
        return value

    @field_validator("resource", "issuer", "jwks_url", "audience")
    @classmethod
    def _url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value  # compared exactly: the ``iss`` / ``aud`` a token carries must match byte for byte


_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSettings(BaseModel):
    """The distributed runner's broker and topics (docs/operations.md, "Run distributed")."""

    model_config = ConfigDict(extra="forbid")

    #: comma-separated ``host:port`` list of brokers
    bootstrap_servers: str = "localhost:9092"
    #: the input: one event per message, keyed per docs/events.md ("Keys and ordering")
    events_topic: str = "mcp.events"
    #: every alert, keyed by alert id (consumers dedupe by alert id)
    alerts_topic: str = "mcp.alerts"
    #: what could not be read as an event, with the reason in the message
    deadletter_topic: str = "mcp.deadletter"
    #: the repartition topic: events re-keyed by detector state key (one message per
    #: destination partition and batch); its partition count is the detectors' parallelism
    keyed_topic: str = "mcp.events.keyed"
    #: faust app id: the consumer group and the prefix of the state changelog topic
    app_id: str = "mcpsift"
    #: partitions of ``events_topic`` and ``keyed_topic`` (and the changelog): the most
    #: workers that can share the work; see docs/operations.md for sizing
    partitions: int = Field(default=8, ge=1, le=10_000)
    alerts_partitions: int = Field(default=4, ge=1, le=10_000)
    deadletter_partitions: int = Field(default=1, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=16)
    #: retention per topic, in hours (the changelog is compacted instead)
    events_retention_hours: float = Field(default=7 * 24, gt=0)
    keyed_retention_hours: float = Field(default=24, gt=0)
    alerts_retention_hours: float = Field(default=30 * 24, gt=0)
    deadletter_retention_hours: float = Field(default=30 * 24, gt=0)
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: Optional[Path] = None
    ssl_certfile: Optional[Path] = None
    ssl_keyfile: Optional[Path] = None
    sasl_mechanism: Optional[str] = None
    sasl_username: Optional[str] = None
    #: prefer ``sasl_password_env`` / ``sasl_password_file`` (a secret never belongs in a config file)
    sasl_password: Optional[str] = Field(default=None, repr=False)
    sasl_password_env: Optional[str] = None
    sasl_password_file: Optional[Path] = None

    @field_validator("security_protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        if value not in _SECURITY_PROTOCOLS:
            raise ValueError(f"must be one of {', '.join(_SECURITY_PROTOCOLS)}")
        return value

    @field_validator("sasl_mechanism")
    @classmethod
    def _mechanism(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in _SASL_MECHANISMS:
            raise ValueError(f"must be one of {', '.join(_SASL_MECHANISMS)}")
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{part.strip()!r} is not host:port (give a comma-separated list of host:port)")
        return value

    def topic_names(self) -> tuple[str, str, str, str]:
        return (self.events_topic, self.alerts_topic, self.deadletter_topic, self.keyed_topic)


class WorkerSettings(BaseModel):
    """``mcpsift worker``: batching and its metrics endpoint."""

    model_config = ConfigDict(extra="forbid")

    #: events taken per batch (one ClickHouse insert, one repartition message per partition)
    batch_size: int = Field(default=5_000, ge=1, le=100_000)
    #: a batch is processed after this many seconds even when not full
    batch_timeout_s: float = Field(default=0.5, gt=0, le=60)
    #: a worker that stops heartbeating (crashed, frozen) loses its partitions after this long
    session_timeout_s: float = Field(default=10.0, ge=3, le=300)
    #: Prometheus ``/metrics`` of the worker (0: no endpoint)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)


class TelemetrySettings(BaseModel):
    """mcpsift's own traces and metrics (not the MCP traffic it watches)."""

    model_config = ConfigDict(extra="forbid")

    #: OTLP/HTTP endpoint (e.g. ``http://otel-collector:4318``) traces and metrics are
    #: exported to; unset: no export (``/metrics`` still works)
    otlp_endpoint: Optional[str] = None
    #: extra headers for the OTLP endpoint, e.g. an API key
    otlp_headers: dict[str, str] = Field(default_factory=dict, repr=False)
    #: ``service.name`` of the exported telemetry
    service_name: str = "mcpsift"
    #: ``/metrics`` on ``serve`` / ``api`` needs an authenticated caller (any role); false opens it
    metrics_require_auth: bool = True

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP/HTTP)")
        return value


class ClickHouseSettings(BaseModel):
    """How to talk to a ClickHouse server (``clickhouse_dsn`` http(s)://…); ignored for chDB."""

    model_config = ConfigDict(extra="forbid")

    #: seconds to open a connection, and to wait for a query's answer
    connect_timeout_s: float = Field(default=10.0, gt=0)
    send_receive_timeout_s: float = Field(default=300.0, gt=0)
    #: attempts of a query or insert that failed transiently (connection refused or reset,
    #: timeout, HTTP 502/503/504, ClickHouse "too many queries" and similar), with
    #: exponential back-off from ``retry_backoff_s``
    retries: int = Field(default=5, ge=0, le=100)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    #: https: verify the server's certificate (on by default), against ``ca_file`` if given
    verify: bool = True
    ca_file: Optional[Path] = None
    #: https: a client certificate (mutual TLS)
    client_cert_file: Optional[Path] = None
    client_key_file: Optional[Path] = None
    #: https: the name to check the certificate against when it differs from the DSN's host
    server_host_name: Optional[str] = None
    #: the DSN's password may instead come from here (keep it out of config files)
    password_env: Optional[str] = None
    password_file: Optional[Path] = None
    #: create tables ``ON CLUSTER <name>`` with Replicated* engines (docs/operations.md)
    cluster: Optional[str] = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MCPSIFT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    #: where the embedded store and spools live
    data_dir: Path = Path(".mcpsift")
    #: ``chdb:///path`` (embedded, default ``chdb://<data_dir>/clickhouse``) or ``http(s)://user:pass@host:8123``
    clickhouse_dsn: Optional[str] = None
    #: ClickHouse database that holds mcpsift's tables
    database: str = "mcpsift"
    #: ``mcpsift serve`` binds here
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    #: events up to this many seconds late (by event time) are still processed in order
    allowed_lateness_s: float = Field(default=30.0, ge=0)
    #: tenant of events that name none
    default_tenant: str = "default"
    #: server name -> canonical resource URI, used to fill ``server.resource`` when a producer only knows the name
    servers: dict[str, str] = Field(default_factory=dict)
    #: days the event log keeps events (0 = forever)
    retention_days: int = Field(default=0, ge=0)
    #: largest HTTP ingest body accepted, in bytes
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    #: seconds between detector-state checkpoints in ``serve``
    checkpoint_interval_s: float = Field(default=5.0, gt=0)
    #: how many recent event ids the pipeline remembers to drop redeliveries
    dedup_window_events: int = Field(default=200_000, ge=1000)
    #: hash-chain every stored ingest batch per tenant (``mcpsift verify``; docs/operations.md
    #: "Tamper evidence"); off only to measure its cost
    tamper_evidence: bool = True
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)
    #: SIEM outputs: a list of ``{type: webhook|splunk_hec|elastic|syslog|ocsf|file, ...}``
    #: (docs/outputs.md); validated strictly at start-up
    outputs: list[Any] = Field(default_factory=list)
    #: authentication of API callers: JWT issuer, API keys, rate limits
    auth: AuthSettings = Field(default_factory=AuthSettings)
    #: ClickHouse server connection options (timeouts, retries, TLS)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    #: the distributed runner's broker and topics
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    #: ``mcpsift worker`` batching and metrics endpoint
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    #: mcpsift's own traces and metrics
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[Any]) -> list[Any]:
        from mcpsift.streams.sinks.outputs import parse_output_configs

        return parse_output_configs(value)

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn_scheme(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return value

    @property
    def dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # explicit arguments (command-line flags) > environment > YAML file
        return (init_settings, env_settings, _YamlSource(settings_cls, _yaml_data.get()))


_yaml_data: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("mcpsift_yaml_data", default={})


class _YamlSource(PydanticBaseSettingsSource):
    """The parsed config file, handed over by :func:`load_settings`."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings from a YAML file, the environment and ``overrides``.

    ``overrides`` (e.g. ``--port`` from the command line) win over both.
    Raises :class:`ConfigError` naming every unknown or invalid key.
    """
    data: dict[str, Any] = {}
    where = "environment"
    if config_file is not None:
        data = _read_yaml(Path(config_file))
        where = f"config file {config_file}"
    token = _yaml_data.set(data)
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, where)) from None
    finally:
        _yaml_data.reset(token)
    return settings


def _explain(exc: ValidationError, where: str) -> str:
    known = ", ".join(sorted(Settings.model_fields))
    lines = [f"invalid settings ({where}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}' (known keys: {known})")
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"  {key}: {message}")
    return "\n".join(lines)


@functools.lru_cache(maxsize=8)
def get_settings(config_file: Optional[str] = None) -> Settings:
    """The settings for ``config_file`` (cached; ``get_settings.cache_clear()`` in tests)."""
    return load_settings(config_file)
