"""SIEM outputs: the contract every output implements, its config, the registry.

One canonical :class:`~mcpsift.alerts.Alert` is produced by the detectors;
each output renders it for its receiver at the edge. Outputs register here by
``type`` (see :data:`OUTPUT_MODULES`); the delivery engine
(:mod:`mcpsift.streams.outbox`) knows none of them by name.

When an output is called (all on the dispatcher's event loop):

* :meth:`Output.open` once before the first send (open clients, sockets, files);
* :meth:`Output.send` with a batch of at most ``batch_size`` alerts that passed
  the output's filters; it returns one :class:`Outcome` per alert, in order,
  and never raises for a receiver problem (a bug raising is treated as
  ``retry`` for the whole batch);
* :meth:`Output.close` at shutdown.

An alert counts as delivered only when :meth:`Output.send` says so for it.
"""

from __future__ import annotations

import importlib
import math
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mcpsift.alerts import SEVERITIES, Alert, Severity

__all__ = [
    "OUTPUT_MODULES",
    "OUTPUT_TYPES",
    "STANDARD_WEBHOOK_SCHEDULE_S",
    "TEST_RULE_ID",
    "Outcome",
    "Output",
    "OutputConfig",
    "OutputConfigError",
    "SecretError",
    "TLSConfig",
    "alert_document",
    "build_outputs",
    "config_error",
    "config_secret",
    "clean_alert",
    "clean_text",
    "error_text",
    "parse_output_configs",
    "read_secret",
    "register_output",
    "severity_rank",
]

#: delays (s) before the 2nd, 3rd, ... attempt: the Standard Webhooks schedule
#: (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); after the last the
#: delivery is dead (visible, re-drivable with ``mcpsift outputs redrive``)
STANDARD_WEBHOOK_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)

#: the rule id of the synthetic alert ``mcpsift outputs test`` sends
TEST_RULE_ID = "mcpsift.test"

#: modules (under ``mcpsift.streams.sinks``) that define outputs, each registering itself
OUTPUT_MODULES: tuple[str, ...] = ("webhook", "splunk_hec", "elastic", "syslog", "ocsf", "file")


class OutputConfigError(ValueError):
    """An ``outputs`` entry in the settings is wrong; the message names it."""


class SecretError(OutputConfigError):
    """A secret could not be read (missing env var or file)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one alert at one output.

    ``delivered``: the receiver acknowledged it. ``retry``: try again later
    (after ``retry_after_s`` when the receiver said so; ``throttle`` pauses the
    whole output, e.g. on 429/502/504). ``failed``: the receiver refused it for
    good (it goes to the dead state at once; re-drivable). ``disable``: the
    receiver said the endpoint is gone (HTTP 410): the output is disabled, the
    alert stays pending.
    """

    kind: Literal["delivered", "retry", "failed", "disable"]
    error: str = ""
    retry_after_s: Optional[float] = None
    throttle: bool = False

    @classmethod
    def ok(cls) -> "Outcome":
        return _DELIVERED


_DELIVERED = Outcome("delivered")


class TLSConfig(BaseModel):
    """TLS towards the receiver; certificate verification is on unless switched off."""

    model_config = ConfigDict(extra="forbid")

    #: verify the receiver's certificate and host name
    verify: bool = True
    #: PEM bundle of CAs to trust instead of the system store
    ca_file: Optional[Path] = None
    #: client certificate (PEM) and its key, for mutual TLS
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    #: host name to check the certificate against (default: the host connected to)
    server_name: Optional[str] = None

    @model_validator(mode="after")
    def _files(self) -> "TLSConfig":
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{key} {path} is not a readable file")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self

    def context(self) -> ssl.SSLContext:
        """A client SSL context for these options."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


class OutputConfig(BaseModel):
    """Options every output has. Subclasses add their own; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    type: str
    #: unique name (default: the type); deliveries are tracked per name
    name: Optional[str] = None
    enabled: bool = True
    #: send alerts of this severity and above
    min_severity: Severity = "low"
    #: only these rule ids (default: all)
    rules: Optional[list[str]] = None
    #: never these rule ids
    exclude_rules: list[str] = Field(default_factory=list)
    #: only these tenants (default: all)
    tenants: Optional[list[str]] = None
    #: alerts per request / write
    batch_size: int = Field(default=100, ge=1, le=10_000)
    #: seconds before a request counts as failed
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: batches in flight at once
    concurrency: int = Field(default=2, ge=1, le=64)
    #: delays (s) before each retry; after the last, the delivery is dead
    retry_schedule_s: list[float] = Field(default_factory=lambda: list(STANDARD_WEBHOOK_SCHEDULE_S))
    tls: TLSConfig = Field(default_factory=TLSConfig)

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if any((not math.isfinite(v)) or v < 0 for v in value):
            raise ValueError("delays must be finite and >= 0")
        return value

    @field_validator("rules", "exclude_rules")
    @classmethod
    def _known_rules(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        from mcpsift.detectors import RULES

        unknown = sorted(set(value or ()) - set(RULES) - {TEST_RULE_ID})
        if unknown:
            raise config_error(f"unknown rule id(s) {', '.join(unknown)} (see `mcpsift rules`)")
        return value

    @property
    def output_name(self) -> str:
        return self.name or self.type

    def accepts(self, alert: Alert) -> bool:
        """True when this output wants ``alert`` (severity, rule and tenant filters)."""
        if severity_rank(alert.severity) < severity_rank(self.min_severity):
            return False
        if self.rules is not None and alert.rule_id not in self.rules:
            return False
        if alert.rule_id in self.exclude_rules:
            return False
        if self.tenants is not None and alert.tenant not in self.tenants:
            return False
        return True


def read_secret(value: Optional[SecretStr], file: Optional[Path], env: Optional[str], what: str) -> Optional[str]:
    """A secret given inline, in a file (``*_file``) or an env var (``*_env``); at most one.

    The value is never logged; errors name the option, not the secret.
    """
    given = [k for k, v in (("inline", value), ("file", file), ("env", env)) if v is not None]
    if len(given) > 1:
        raise SecretError(f"{what}: give one of {what}, {what}_file, {what}_env (got {', '.join(given)})")
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{what}_file {file}: {exc.strerror}") from None
    if env is not None:
        found = os.environ.get(env)
        if found is None:
            raise SecretError(f"{what}_env: environment variable {env} is not set")
        return found
    return None


def config_error(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("output_config", "{detail}", {"detail": message})


def config_secret(value: Optional[SecretStr], file: Optional[Path], env: Optional[str], what: str) -> Optional[str]:
    """:func:`read_secret` for use in a config validator (its error message shown as is)."""
    try:
        return read_secret(value, file, env, what)
    except SecretError as exc:
        raise config_error(str(exc)) from None


class Output:
    """Base of every output; see the module docstring for when each hook runs."""

    type: ClassVar[str]
    Config: ClassVar[type[OutputConfig]] = OutputConfig

    def __init__(self, config: OutputConfig):
        self.config = config
        self.name = config.output_name

    async def open(self) -> None:
        pass

    async def send(self, alerts: Sequence[Alert]) -> list[Outcome]:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        """Where this output sends, for status and test reports (never a secret)."""
        return self.type

    def max_send_s(self) -> float:
        """The longest one :meth:`send` may take before the engine gives up on it
        (its alerts are then retried); outputs that wait for more than one
        request (e.g. indexer acknowledgement) say so by overriding this."""
        return self.config.timeout_s * 3 + 5


OUTPUT_TYPES: dict[str, type[Output]] = {}


def register_output(cls: type[Output]) -> type[Output]:
    """Class decorator: make ``cls`` available as ``type: <cls.type>`` in settings."""
    if cls.type in OUTPUT_TYPES and OUTPUT_TYPES[cls.type] is not cls:
        raise RuntimeError(f"output type {cls.type!r} registered twice")
    OUTPUT_TYPES[cls.type] = cls
    return cls


def _load_types() -> dict[str, type[Output]]:
    if len(OUTPUT_TYPES) < len(OUTPUT_MODULES):
        for module in OUTPUT_MODULES:
            importlib.import_module(f"{__package__}.{module}")
    return OUTPUT_TYPES


def parse_output_configs(raw: Sequence[Any]) -> list[OutputConfig]:
    """Validate the ``outputs`` list of the settings strictly.

    Raises :class:`OutputConfigError` naming the entry (by position and name),
    the key and what is allowed: an unknown type, an unknown key, a bad value,
    two outputs with one name, a secret that cannot be read.
    """
    types = _load_types()
    configs: list[OutputConfig] = []
    problems: list[str] = []
    for index, entry in enumerate(raw):
        label = f"outputs[{index}]"
        if isinstance(entry, OutputConfig):
            configs.append(entry)
            continue
        if not isinstance(entry, dict):
            problems.append(f"{label}: must be a mapping with a 'type', not {type(entry).__name__}")
            continue
        if entry.get("name"):
            label += f" ({entry['name']})"
        kind = entry.get("type")
        if kind not in types:
            problems.append(f"{label}: unknown output type {kind!r} (known: {', '.join(sorted(types))})")
            continue
        config_cls = types[kind].Config
        try:
            config = config_cls.model_validate(entry)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"]) or "(entry)"
                if err["type"] == "extra_forbidden":
                    known = ", ".join(sorted(config_cls.model_fields))
                    problems.append(f"{label}: unknown key '{key}' for type {kind} (known keys: {known})")
                else:
                    problems.append(f"{label}: {key}: {err['msg']}")
            continue
        configs.append(config)
    seen: set[str] = set()
    for config in configs:
        if config.output_name in seen:
            problems.append(f"two outputs are named {config.output_name!r}: give each a unique 'name'")
        seen.add(config.output_name)
    if problems:
        raise OutputConfigError("invalid outputs:\n  " + "\n  ".join(problems))
    return configs


def build_outputs(configs: Sequence[OutputConfig], *, include_disabled: bool = False) -> list[Output]:
    """Output objects for the (enabled) configs."""
    types = _load_types()
    return [types[c.type](c) for c in configs if c.enabled or include_disabled]


def error_text(exc: BaseException) -> str:
    """How an exception reads in an outcome, status and logs: type and a short message."""
    return f"{type(exc).__name__}: {str(exc)[:200] or 'no detail'}"


def severity_rank(severity: str) -> int:
    """0 (low) .. 3 (critical)."""
    return SEVERITIES.index(severity)


def clean_text(text: str) -> str:
    """``text`` with anything that cannot be encoded as UTF-8 (lone surrogates,
    which JSON ``\\udXXX`` escapes in source data can produce) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # via UTF-16: a surrogate pair becomes its character, a lone one U+FFFD
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def alert_document(alert: Alert) -> dict[str, Any]:
    """The canonical alert as a JSON-ready dict (RFC 3339 ``time``): what the
    webhook and file outputs send as is, and what the others map from."""
    return alert.model_dump(mode="json")


def clean_alert(alert: Alert) -> Alert:
    """The alert with every string safe to encode as UTF-8 (outputs see only these)."""
    data = alert.model_dump()
    changed = False
    for key, value in data.items():
        if isinstance(value, str):
            fixed = clean_text(value)
            if fixed is not value:
                data[key] = fixed
                changed = True
        elif isinstance(value, list):
            fixed_list = [clean_text(v) if isinstance(v, str) else v for v in value]
            if any(a is not b for a, b in zip(fixed_list, value)):
                data[key] = fixed_list
                changed = True
    return Alert.model_validate(data) if changed else alert
