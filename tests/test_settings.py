"""Settings: YAML < environment < explicit overrides; unknown keys and rule ids stop start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcpsift.detectors import UnknownDetector, build_detectors
from mcpsift.settings import ConfigError, get_settings, load_settings


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mcpsift.yaml"
    path.write_text(text)
    return path


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("MCPSIFT_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert (s.host, s.port, s.allowed_lateness_s, s.database) == ("127.0.0.1", 8765, 30.0, "mcpsift")
    assert s.dsn.startswith("chdb://") and s.dsn.endswith(".mcpsift/clickhouse")


def test_precedence_yaml_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _yaml(tmp_path, "port: 9000\nhost: 0.0.0.0\nallowed_lateness_s: 5\n")
    monkeypatch.setenv("MCPSIFT_PORT", "9100")
    s = load_settings(config)
    assert (s.host, s.port, s.allowed_lateness_s) == ("0.0.0.0", 9100, 5.0)
    assert load_settings(config, port=9200).port == 9200


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'prot'.*known keys: .*port"):
        load_settings(_yaml(tmp_path, "prot: 1\n"))


def test_unknown_nested_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'detectors.disable'"):
        load_settings(_yaml(tmp_path, "detectors:\n  disable: [x]\n"))


def test_bad_values_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(_yaml(tmp_path, "port: 99999\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_yaml(tmp_path, "port: [\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(_yaml(tmp_path, "- a\n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="clickhouse_dsn"):
        load_settings(_yaml(tmp_path, "clickhouse_dsn: mysql://x\n"))


def test_environment_nested_detector_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPSIFT_DETECTORS__DISABLED", '["session.hijack"]')
    s = load_settings()
    detectors, wanted = build_detectors(s.detectors.enabled, s.detectors.disabled, s.detectors.thresholds)
    assert "session.hijack" not in wanted
    assert all("session.hijack" not in d.rule_ids for d in detectors)


def test_unknown_rule_ids_and_thresholds_stop_startup() -> None:
    with pytest.raises(UnknownDetector, match=r"'auth.nope'.*known rule ids: .*auth.audience_mismatch"):
        build_detectors(enabled=["auth.nope"])
    with pytest.raises(UnknownDetector, match=r"skew.*unknown threshold.*known thresholds: skew_s"):
        build_detectors(thresholds={"auth.expired_token_accepted": {"skew": 5}})
    with pytest.raises(UnknownDetector, match="skew_s"):
        build_detectors(thresholds={"auth.expired_token_accepted": {"skew_s": -1}})


def test_thresholds_reach_the_detector() -> None:
    detectors, _ = build_detectors(
        enabled=["auth.expired_token_accepted"], thresholds={"auth.expired_token_accepted": {"skew_s": 5}}
    )
    (det,) = detectors
    assert det.params.skew_s == 5


def test_get_settings_is_cached_and_replaceable(tmp_path: Path) -> None:
    config = str(_yaml(tmp_path, "port: 9001\n"))
    assert get_settings(config) is get_settings(config)
    get_settings.cache_clear()
    assert get_settings(config).port == 9001


def test_tenant_thresholds_override_per_tenant() -> None:
    detectors, _ = build_detectors(
        enabled=["auth.expired_token_accepted"],
        thresholds={"auth.expired_token_accepted": {"skew_s": 5}},
        tenant_thresholds={"acme": {"auth.expired_token_accepted": {"skew_s": 300}}},
    )
    (detector,) = detectors
    assert detector.params_for("acme").skew_s == 300
    assert detector.params_for("other").skew_s == 5
    with pytest.raises(UnknownDetector, match=r"tenant_thresholds\.acme.*unknown rule id"):
        build_detectors(tenant_thresholds={"acme": {"auth.nope": {}}})
    with pytest.raises(UnknownDetector, match=r"tenant_thresholds\.acme.*skew.*unknown threshold"):
        build_detectors(tenant_thresholds={"acme": {"auth.expired_token_accepted": {"skew": 1}}})


@pytest.mark.parametrize("rule_id", sorted(__import__("mcpsift.detectors", fromlist=["RULES"]).RULES))
def test_rules_show_prints_thresholds_a_settings_file_accepts(rule_id: str, tmp_path) -> None:
    """`mcpsift rules --show RULE` is meant to be pasted into a settings file: it must load back."""
    from typer.testing import CliRunner

    from mcpsift.cli import app
    from mcpsift.detectors import build_from_settings
    from mcpsift.settings import load_settings

    result = CliRunner().invoke(app, ["rules", "--show", rule_id])
    assert result.exit_code == 0, result.output
    config = tmp_path / "c.yaml"
    config.write_text(result.output)
    detectors, _ = build_from_settings(load_settings(config, data_dir=tmp_path))
    assert any(rule_id in d.rule_ids for d in detectors)
