"""The outputs registry, strict config, and the documented examples (every YAML
block of docs/outputs.md must load as it is written)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mcpsift.settings import ConfigError, load_settings
from mcpsift.streams.sinks.outputs import OUTPUT_MODULES, OUTPUT_TYPES, OutputConfigError, parse_output_configs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"
README = Path(__file__).resolve().parents[1] / "README.md"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_every_output_module_registers_its_type() -> None:
    parse_output_configs([])  # loads the modules
    assert set(OUTPUT_TYPES) == {"webhook", "splunk_hec", "elastic", "syslog", "ocsf", "file"}
    assert set(OUTPUT_MODULES) == set(OUTPUT_TYPES)
    for name, cls in OUTPUT_TYPES.items():
        assert cls.type == name and cls.Config.model_fields["type"].annotation.__args__ == (name,)


def test_the_fan_out_knows_no_output_by_name() -> None:
    engine = (Path(__file__).resolve().parents[1] / "streams" / "outbox.py").read_text()
    for name in OUTPUT_TYPES:
        assert not re.search(rf"\b{name}\b", engine), f"streams/outbox.py names the {name} output"


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def _runnable(entry: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> dict:
    """The documented entry with its secrets' env vars set and its files present."""
    entry = dict(entry)
    for key, value in list(entry.items()):
        if key.endswith("_env"):
            monkeypatch.setenv(value, WHSEC if entry["type"] == "webhook" else "c2VjcmV0OmtleQ==")
        elif key.endswith("_file") and key != "path":
            secret = tmp_path / f"{entry.get('name', entry['type'])}-{key}"
            secret.write_text(WHSEC if entry["type"] == "webhook" else "c2VjcmV0OmtleQ==")
            entry[key] = str(secret)
        elif key == "path":
            entry[key] = str(tmp_path / Path(value).name)
    if "tls" in entry:
        entry["tls"] = {**entry["tls"], "ca_file": str(ca_file)}
    return entry


def test_every_documented_example_loads(tmp_path, monkeypatch, tls_certs) -> None:
    blocks = _yaml_blocks(DOCS.read_text())
    documented: set[str] = set()
    for block in blocks:
        data = yaml.safe_load(block)
        entries = data["outputs"] if isinstance(data, dict) else data
        runnable = [_runnable(e, tmp_path, monkeypatch, tls_certs.ca_file) for e in entries]
        configs = parse_output_configs(runnable)
        documented.update(c.type for c in configs)
        for type_ in {e["type"] for e in entries}:
            assert f"## `{type_}`" in DOCS.read_text()
    assert documented == set(OUTPUT_TYPES)


def test_readme_example_loads_as_a_settings_file(tmp_path, monkeypatch, tls_certs) -> None:
    text = README.read_text()
    section = text[text.index("## Send alerts to your SIEM") :]
    (block,) = _yaml_blocks(section.split("\n## ", 1)[0])
    data = yaml.safe_load(block)
    data["outputs"] = [_runnable(e, tmp_path, monkeypatch, tls_certs.ca_file) for e in data["outputs"]]
    config = tmp_path / "mcpsift.yaml"
    config.write_text(yaml.safe_dump(data))
    settings = load_settings(config)
    assert {c.type for c in settings.outputs} == set(OUTPUT_TYPES)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"type": "pagerduty"}, "unknown output type 'pagerduty' (known: elastic, file, ocsf, splunk_hec, syslog, webhook)"),
        ({"type": "file", "path": "/tmp/x", "colour": "red"}, "unknown key 'colour' for type file"),
        ({"type": "file", "path": "/tmp/x", "min_severity": "urgent"}, "min_severity"),
        ({"type": "file", "path": "/tmp/x", "batch_size": 0}, "batch_size"),
        ({"type": "file", "path": "/tmp/x", "retry_schedule_s": [-1]}, "retry_schedule_s"),
        ({"type": "file", "path": "/tmp/x", "tls": {"ca_file": "/nonexistent/ca.pem"}}, "ca_file /nonexistent/ca.pem is not a readable file"),
        ("webhook", "must be a mapping with a 'type'"),
        ({"type": "file", "path": "/tmp/x", "rules": ["tool.rug_pull"]}, "rules: unknown rule id(s) tool.rug_pull"),
        ({"type": "file", "path": "/tmp/x", "exclude_rules": ["nope"]}, "exclude_rules: unknown rule id(s) nope"),
    ],
)
def test_config_errors_name_the_entry_and_key(entry, message) -> None:
    with pytest.raises(OutputConfigError) as caught:
        parse_output_configs([entry])
    assert message in str(caught.value) and "outputs[0]" in str(caught.value)


def test_names_must_be_unique_and_errors_come_through_settings(tmp_path) -> None:
    with pytest.raises(OutputConfigError, match="two outputs are named 'file'"):
        parse_output_configs([{"type": "file", "path": "/tmp/a"}, {"type": "file", "path": "/tmp/b"}])
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"outputs": [{"type": "webhook", "url": "http://x/", "secret": WHSEC, "retries": 3}]}))
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = str(caught.value)
    assert "outputs" in text and "unknown key 'retries' for type webhook" in text and WHSEC not in text
    assert "Value error" not in text
