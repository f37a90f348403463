"""docker-compose.yml, the Dockerfile and deploy/ checked statically.

Docker cannot run on our machines, so these tests read the files the way
docker compose would (YAML, ``${VAR}`` interpolation from deploy/env.example)
and check what each service refers to against what exists: files in the
repository, mcpsift's real CLI (walked through click), the real Settings model
(pydantic), Grafana's provisioning files, the console script in pyproject. The
ClickHouse init script runs under bash and its SQL goes through ClickHouse's own
parser (chDB). When the ``docker compose`` plugin is installed, ``docker compose
config`` checks the file as well.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
INITDB = ROOT / "deploy" / "clickhouse" / "initdb"

EXPECTED_SERVICES = {"kafka", "clickhouse", "grafana", "init", "worker", "api", "outputs"}
ONE_SHOT = {"init"}
#: what the test fills in for the secrets deploy/env.example leaves empty
SECRETS = {
    "CLICKHOUSE_PASSWORD": "ch-secret-'quoted'\\",
    "GRAFANA_CLICKHOUSE_PASSWORD": "grafana-ch-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-admin-secret",
}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|APIKEY|CREDENTIAL", re.I)


# --------------------------------------------------------------------------- helpers


class MissingVariable(LookupError):
    """A ``${VAR:?message}`` whose variable is unset or empty: compose stops with the message."""


_REF = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


def interpolate(text: str, env: dict[str, str], used: set[str] | None = None) -> str:
    """Compose's variable substitution (``$$``, ``$VAR``, ``${VAR}``, ``:-``, ``-``, ``:?``, ``?``, ``:+``, ``+``)."""

    def one(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["plain"]:
            name, op, arg = match["plain"], None, None
        else:
            braced = _BRACED.match(match["braced"])
            assert braced, f"not a compose variable reference: ${{{match['braced']}}}"
            name, op, arg = braced["name"], braced["op"], braced["arg"]
            assert arg is None or "$" not in arg, f"nested reference in ${{{match['braced']}}}"
        if used is not None:
            used.add(name)
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op == ":?":
            if not value:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op == "?":
            if value is None:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return "" if value is None else arg
        return value or ""

    return _REF.sub(one, text)


def interpolate_tree(node: Any, env: dict[str, str], used: set[str] | None = None) -> Any:
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env, used) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env, used) for value in node]
    if isinstance(node, str):
        return interpolate(node, env, used)
    return node


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # merges the x-mcpsift anchors
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def env_example() -> tuple[dict[str, str], set[str]]:
    """The variables of deploy/env.example and those of them with a comment right above
    (a variable may share the comment of the variable line above it)."""
    values: dict[str, str] = {}
    documented: set[str] = set()
    previous = ""
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, sep, value = stripped.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"env.example line {number}: not NAME=value"
            assert name not in values, f"env.example sets {name} twice"
            values[name] = value
            is_header = previous.startswith("# ---")
            if (previous.startswith("#") and not is_header) or previous in documented:
                documented.add(name)
            previous = name
        else:
            previous = stripped
    return values, documented


def full_env() -> dict[str, str]:
    values, _ = env_example()
    return {**values, **SECRETS}


def compose() -> dict[str, Any]:
    """docker-compose.yml as compose sees it with deploy/env.example and the secrets set."""
    return interpolate_tree(raw_compose(), full_env())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def is_mcpsift(service: dict[str, Any]) -> bool:
    return "build" in service and str(service.get("image", "")).startswith("mcpsift")


def mcpsift_services() -> dict[str, dict[str, Any]]:
    found = {name: s for name, s in services().items() if is_mcpsift(s)}
    assert set(found) == {"init", "worker", "api", "outputs"}, sorted(found)
    return found


def volume_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(kind, source, target) per mount: kind is ``bind`` or ``volume``."""
    for mount in service.get("volumes") or []:
        if isinstance(mount, dict):
            yield mount["type"], str(mount["source"]), str(mount["target"])
            continue
        source, target, *_ = str(mount).split(":")
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        yield kind, source, target


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(part) for part in test]


def mcpsift_cli_errors(argv: list[str]) -> list[str]:
    """What is wrong with ``mcpsift <argv>`` against the real typer app (empty: fine).

    Duck-typed: typer may bring its own copy of click (``typer._click``)."""
    import typer.main

    from mcpsift.cli import app

    def subcommands(command: Any) -> dict[str, Any] | None:
        found = getattr(command, "commands", None)
        return found if isinstance(found, dict) else None

    command = typer.main.get_command(app)
    words = list(argv)
    path = ["mcpsift"]
    while subcommands(command) is not None and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = subcommands(command).get(name)
        if sub is None:
            return [f"`{' '.join(path)} {name}`: no such command (has: {', '.join(sorted(subcommands(command)))})"]
        command, path = sub, path + [name]
    if subcommands(command) is not None:
        return [f"`{' '.join(path)}` is a group; name one of its commands: {', '.join(sorted(subcommands(command)))}"]
    options = {o for p in command.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}
    errors = [f"`{' '.join(path)}` has no option {w.split('=', 1)[0]}" for w in words
              if w.startswith("-") and w.split("=", 1)[0] not in options]
    if not errors:
        try:  # the values too: types, choices, required options (parsed, not run)
            command.make_context(" ".join(path), list(words))
        except Exception as exc:  # click's UsageError, whichever copy of click
            if not hasattr(exc, "format_message"):
                raise
            errors.append(f"`{' '.join(path + words)}`: {exc.format_message()}")
    return errors


def setting_name_errors(name: str) -> list[str]:
    """An ``MCPSIFT_*`` variable that names no setting (pydantic-settings would ignore a
    top-level one silently, so it is checked here)."""
    from pydantic import BaseModel

    from mcpsift.settings import Settings

    parts = name.removeprefix("MCPSIFT_").lower().split("__")
    model: type[BaseModel] = Settings
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return [f"{name}: {'.'.join(parts[:depth + 1])} is not a setting (known: {', '.join(sorted(model.model_fields))})"]
        if depth < len(parts) - 1:
            annotation = field.annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return [f"{name}: {'.'.join(parts[:depth + 1])} has no sub-settings"]
            model = annotation
    return []


# --------------------------------------------------------------------------- variables and secrets


def test_every_variable_the_compose_file_uses_is_documented_in_env_example() -> None:
    used: set[str] = set()
    interpolate_tree(raw_compose(), full_env(), used)
    values, documented = env_example()
    assert used, "docker-compose.yml uses no variable at all"
    assert not used - set(values), f"used in docker-compose.yml, missing from deploy/env.example: {sorted(used - set(values))}"
    assert not set(values) - used, f"in deploy/env.example but never used: {sorted(set(values) - used)}"
    assert not set(values) - documented, f"no comment explains: {sorted(set(values) - documented)}"


def test_env_example_holds_no_secret_and_compose_stops_without_one() -> None:
    values, _ = env_example()
    secrets = {name for name in values if SECRET_WORDS.search(name)}
    assert secrets == set(SECRETS), sorted(secrets)
    assert all(values[name] == "" for name in secrets), "deploy/env.example must leave every secret empty"
    # each missing secret, alone, stops compose with a message that names it
    for name in SECRETS:
        with pytest.raises(MissingVariable, match=rf"^{name}: .*\.env"):
            interpolate_tree(raw_compose(), {**values, **SECRETS, name: ""})
    interpolate_tree(raw_compose(), {**values, **SECRETS})

    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        # the real parser too (no daemon needed for `config`)
        env = {k: v for k, v in os.environ.items() if k not in SECRETS}
        argv = [docker, "compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "-q"]
        refused = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert refused.returncode != 0 and "CLICKHOUSE_PASSWORD" in refused.stderr + refused.stdout
        accepted = subprocess.run(argv, capture_output=True, text=True, env={**env, **SECRETS}, cwd=ROOT, timeout=120)
        assert accepted.returncode == 0, accepted.stderr


def test_no_literal_secret_in_the_compose_file() -> None:
    """Every value under a password/secret/token key is a ``${VAR}`` from .env, or names
    where the secret is (``*_ENV`` / ``*_FILE``); no URL carries a password."""
    problems = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{where}.{key}"
                if SECRET_WORDS.search(str(key)) and not isinstance(value, (dict, list)):
                    text = "" if value is None else str(value)
                    if str(key).upper().endswith("_ENV"):
                        ok = re.fullmatch(r"[A-Z][A-Z0-9_]*", text) is not None
                    elif str(key).upper().endswith("_FILE"):
                        ok = text.startswith("/")
                    else:
                        ok = re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}", text) is not None
                    if not ok:
                        problems.append(f"{here}: {text!r} is not a required ${{VAR:?message}} from .env")
                walk(value, here)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str):
            if re.search(r"://[^/@\s:]+:[^/@\s]+@", interpolate(node, full_env())):
                problems.append(f"{where}: a URL with a password: {node!r}")
            if "=" in node and SECRET_WORDS.search(node.split("=", 1)[0]):
                problems.append(f"{where}: KEY=value form for a secret: {node!r}")

    walk(raw_compose(), "compose")
    assert not problems, "\n".join(problems)
    # and the checker does catch one
    problems.clear()
    walk({"environment": {"CLICKHOUSE_PASSWORD": "hunter2", "DSN": "http://u:hunter2@h:8123"}}, "probe")
    assert len(problems) == 2


# --------------------------------------------------------------------------- services


def test_every_service_is_complete() -> None:
    found = services()
    assert set(found) == EXPECTED_SERVICES, sorted(found)
    for name, service in found.items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        if "build" not in service:
            image = str(service["image"])
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: pin the image tag ({image})"
        if name in ONE_SHOT:
            assert str(service.get("restart", "no")) == "no", f"{name} runs once: restart must be 'no'"
            continue
        assert "healthcheck" in service and healthcheck_argv(service)[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name}: no restart policy"


def test_depends_on_waits_for_health_and_for_the_topics() -> None:
    found = services()
    for name, service in found.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in found, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in found[target], f"{name} waits for {target} to be healthy; it has no healthcheck"
            else:
                assert condition == "service_completed_successfully" and target in ONE_SHOT, f"{name} -> {target}: {condition}"
    needs = {"init": {"kafka"}, "worker": {"kafka", "clickhouse", "init"}, "api": {"clickhouse"},
             "outputs": {"clickhouse"}, "grafana": {"clickhouse"}}
    for name, targets in needs.items():
        assert targets <= set(found[name].get("depends_on") or {}), f"{name} must wait for {sorted(targets)}"


def test_replicas_workers_scale_and_one_outputs_process() -> None:
    found = services()
    assert found["worker"]["deploy"]["replicas"] >= 2
    assert found["outputs"].get("deploy", {}).get("replicas", 1) == 1
    for name in ("worker", "outputs", "init"):  # --scale must not collide on a name or host port
        assert "container_name" not in found[name] and not found[name].get("ports"), name


def test_volumes_exist_and_are_declared() -> None:
    data = compose()
    declared = set(data.get("volumes") or {})
    used = set()
    for name, service in data["services"].items():
        for kind, source, target in volume_mounts(service):
            assert target.startswith("/"), f"{name}: mount target {target}"
            if kind == "bind":
                assert (ROOT / source).resolve().is_relative_to(ROOT), f"{name}: {source} is outside the repository"
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist in the repository"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared under volumes:"
                used.add(source)
    assert declared == used, f"declared but unused: {sorted(declared - used)}"
    for name in ("kafka", "clickhouse", "grafana", "api"):  # state that outlives a container
        assert any(kind == "volume" for kind, _, _ in volume_mounts(data["services"][name])), name


def test_ports_are_published_where_the_services_listen() -> None:
    found = services()

    def published(name: str) -> dict[int, str]:
        out = {}
        for entry in found[name].get("ports") or []:
            host_ip, host_port, container = str(entry).rsplit(":", 2)
            assert host_ip == "127.0.0.1", f"{name}: publish on PUBLISH_ADDRESS (default 127.0.0.1), not {entry}"
            out[int(container)] = host_port
        return out

    assert 8765 in published("api")
    assert "--port" in found["api"]["command"] and found["api"]["command"][found["api"]["command"].index("--port") + 1] == "8765"
    assert 3000 in published("grafana")
    external = environment_of(found["kafka"])["KAFKA_LISTENERS"]
    assert "EXTERNAL://:9094" in external and 9094 in published("kafka")
    advertised = environment_of(found["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://localhost:{published('kafka')[9094]}" in advertised
    worker_env = environment_of(found["worker"])
    assert worker_env["MCPSIFT_WORKER__METRICS_HOST"] == "0.0.0.0"
    assert [str(p) for p in found["worker"]["expose"]] == [worker_env["MCPSIFT_WORKER__METRICS_PORT"]]
    assert worker_env["MCPSIFT_WORKER__METRICS_PORT"] in " ".join(healthcheck_argv(found["worker"]))
    assert "8765/healthz" in " ".join(healthcheck_argv(found["api"]))


def test_kafka_is_a_single_kraft_node_the_workers_can_reach() -> None:
    found = services()
    env = environment_of(found["kafka"])
    assert found["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID must be 16 bytes, base64url"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_LOG_DIRS"] in {target for _, _, target in volume_mounts(found["kafka"])}
    listeners = dict(part.split("://") for part in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    for name, service in mcpsift_services().items():
        assert environment_of(service)["MCPSIFT_KAFKA__BOOTSTRAP_SERVERS"] == listeners["INTERNAL"], name
    assert "kafka-broker-api-versions.sh" in " ".join(healthcheck_argv(found["kafka"]))


# --------------------------------------------------------------------------- mcpsift itself


def test_mcpsift_commands_and_flags_exist_in_the_cli() -> None:
    """Every command a service runs (and every mcpsift healthcheck) is a real command of
    `mcpsift` with real options."""
    errors = []
    for name, service in mcpsift_services().items():
        command = service["command"]
        assert isinstance(command, list), f"{name}: give the command as a list"
        errors += [f"{name}: {e}" for e in mcpsift_cli_errors(command)]
        argv = healthcheck_argv(service) if "healthcheck" in service else []
        if argv[:2] == ["CMD", "mcpsift"]:
            errors += [f"{name} healthcheck: {e}" for e in mcpsift_cli_errors(argv[2:])]
    found = services()
    assert found["init"]["command"][:2] == ["topics", "create"]
    assert found["worker"]["command"][:1] == ["worker"]
    assert found["api"]["command"][:1] == ["api"] and "--insecure-local" not in found["api"]["command"]
    assert found["outputs"]["command"][:2] == ["outputs", "run"]
    assert not errors, "\n".join(errors)
    # the walk does reject what is not there
    assert mcpsift_cli_errors(["wrker"]) and mcpsift_cli_errors(["api", "--hots", "x"])
    assert mcpsift_cli_errors(["api", "--port", "eighty"]) and mcpsift_cli_errors(["outputs"])
    assert not mcpsift_cli_errors(["api", "--host", "0.0.0.0", "--port", "8765"])


def test_the_config_file_each_service_gets_is_the_one_mounted() -> None:
    for name, service in mcpsift_services().items():
        argv = service["command"]
        config = argv[argv.index("--config") + 1]
        mounts = {target: source for _, source, target in volume_mounts(service)}
        assert config in mounts, f"{name}: --config {config} is not mounted"
        assert (ROOT / mounts[config]).is_file(), f"{name}: {mounts[config]} is not a file in the repository"


def test_every_mcpsift_variable_is_a_valid_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mcpsift service's environment, exactly, builds a Settings (with the config file
    it mounts), and says what the compose file means it to."""
    from mcpsift.settings import load_settings

    values, _ = env_example()
    names = [n for n in values if n.startswith("MCPSIFT_")]
    errors = [e for n in names for e in setting_name_errors(n)]
    for name, service in mcpsift_services().items():
        env = environment_of(service)
        errors += [f"{name}: {e}" for n in env if n.startswith("MCPSIFT_") for e in setting_name_errors(n)]
    assert not errors, "\n".join(errors)
    assert setting_name_errors("MCPSIFT_KAFKA__PARTITONS") and setting_name_errors("MCPSIFT_KAFKA_PARTITIONS")
    assert setting_name_errors("MCPSIFT_DATABASE__NAME") and not setting_name_errors("MCPSIFT_CLICKHOUSE__PASSWORD_ENV")

    for name, service in mcpsift_services().items():
        env = environment_of(service)
        for key in list(os.environ):
            if key.startswith("MCPSIFT_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        config = {t: s for _, s, t in volume_mounts(service)}["/etc/mcpsift/mcpsift.yaml"]
        settings = load_settings(ROOT / config)
        assert settings.clickhouse_dsn == "http://mcpsift@clickhouse:8123", name
        assert settings.clickhouse.password_env and env.get(settings.clickhouse.password_env) == SECRETS["CLICKHOUSE_PASSWORD"]
        assert settings.database == values["CLICKHOUSE_DATABASE"]
        assert settings.kafka.bootstrap_servers == "kafka:9092"
        assert settings.kafka.partitions == int(values["MCPSIFT_KAFKA__PARTITIONS"])
        assert str(settings.data_dir) == "/var/lib/mcpsift"
        if name == "worker":
            assert (settings.worker.metrics_host, settings.worker.metrics_port) == ("0.0.0.0", 9464)
        if name == "api":
            keys_file = settings.auth.bootstrap_keys_file
            assert keys_file is not None
            volumes = {t: s for kind, s, t in volume_mounts(service) if kind == "volume"}
            assert str(keys_file.parent) in volumes, "the bootstrap keys file must be on a named volume"
            assert settings.auth.resource == values["MCPSIFT_AUTH__RESOURCE"]
        if name == "outputs":
            assert settings.outputs, "deploy/mcpsift.yaml configures no output: outputs run would have nothing to do"
            volumes = {t for kind, _, t in volume_mounts(service) if kind == "volume"}
            for output in settings.outputs:
                path = getattr(output, "path", None)
                if path is not None:
                    assert str(Path(path).parent) in volumes, f"output {output.name}: {path} is not on a volume"
    # and a misspelt nested variable does not validate
    monkeypatch.setenv("MCPSIFT_KAFKA__PARTITONS", "8")
    with pytest.raises(Exception, match="kafka.partitons"):
        load_settings()


# --------------------------------------------------------------------------- Grafana


def test_grafana_mounts_match_the_provisioning_files() -> None:
    grafana = services()["grafana"]
    mounts = {target: source for _, source, target in volume_mounts(grafana)}
    provisioning = ROOT / "dashboards" / "provisioning"
    assert (ROOT / mounts["/etc/grafana/provisioning/datasources"]).resolve() == provisioning / "datasources"
    assert (ROOT / mounts["/etc/grafana/provisioning/dashboards"]).resolve() == provisioning / "dashboards"
    paths = [p["options"]["path"] for f in (provisioning / "dashboards").glob("*.yaml")
             for p in yaml.safe_load(f.read_text())["providers"]]
    assert paths, "no dashboard provider"
    for path in paths:
        assert path in mounts, f"provider path {path} is not mounted"
        json_dir = (ROOT / mounts[path]).resolve()
        assert json_dir == ROOT / "dashboards" / "json" and list(json_dir.glob("*.json"))


def test_grafana_gets_every_variable_the_datasource_reads() -> None:
    grafana = services()["grafana"]
    env = environment_of(grafana)
    plugins = set()
    for f in (ROOT / "dashboards" / "provisioning" / "datasources").glob("*.yaml"):
        text = f.read_text()
        values = yaml.dump(yaml.safe_load(text))  # the values Grafana expands, not the comments
        wanted = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", values))
        assert wanted, f"{f.name} reads no variable"
        assert not wanted - set(env), f"{f.name} reads {sorted(wanted - set(env))}, grafana does not set them"
        plugins |= {d["type"] for d in yaml.safe_load(text)["datasources"]}
    installed = {p.split()[0] for p in env["GF_INSTALL_PLUGINS"].split(",")}
    assert plugins <= installed, f"datasource plugins {sorted(plugins - installed)} are not installed"
    assert all(len(p.split()) == 2 for p in env["GF_INSTALL_PLUGINS"].split(",")), "pin the plugin version"
    assert env["CLICKHOUSE_HOST"] == "clickhouse" and env["CLICKHOUSE_PORT"] == "8123"
    clickhouse = environment_of(services()["clickhouse"])
    assert env["CLICKHOUSE_USER"] == clickhouse["GRAFANA_CLICKHOUSE_USER"] != clickhouse["CLICKHOUSE_USER"]
    assert env["CLICKHOUSE_DATABASE"] == clickhouse["CLICKHOUSE_DB"]


def test_the_clickhouse_init_script_makes_a_read_only_grafana_user(tmp_path: Path) -> None:
    """Run under bash with a `clickhouse` on PATH that records its stdin; ClickHouse's own
    parser (chDB, in a subprocess) then checks the SQL and that the password survives quoting."""
    clickhouse = services()["clickhouse"]
    mounts = {target: source for _, source, target in volume_mounts(clickhouse)}
    assert (ROOT / mounts["/docker-entrypoint-initdb.d"]).resolve() == INITDB
    scripts = sorted(INITDB.glob("*.sh"))
    assert scripts and all(os.access(s, os.X_OK) for s in scripts)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "clickhouse"
    recorder.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\ncat > {tmp_path}/sql\n")
    recorder.chmod(0o755)
    env = environment_of(clickhouse)
    password = "p'w\\x $y`z\"q"
    run_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", **env, "GRAFANA_CLICKHOUSE_PASSWORD": password}
    run = subprocess.run(["bash", str(INITDB / "10-grafana-reader.sh")], env=run_env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    argv = (tmp_path / "argv").read_text()
    assert password not in argv and SECRETS["CLICKHOUSE_PASSWORD"] not in argv, "a password on the command line"
    statements = [s for s in (tmp_path / "sql").read_text().splitlines() if s.strip()]
    assert [s.split()[0] for s in statements] == ["CREATE", "GRANT"]
    literal = re.search(r" BY ('(?:[^'\\]|\\.)*');$", statements[0])
    assert literal, statements[0]
    probe = (
        "import chdb, json, sys\n"
        "sql = json.loads(sys.argv[1])\n"
        "for s in sql['statements']:\n"
        "    chdb.query('EXPLAIN AST ' + s.rstrip(';'))\n"
        "print(chdb.query('SELECT ' + sql['literal'] + ' AS p FORMAT JSONEachRow').data())\n"
    )
    import json

    parsed = subprocess.run([sys.executable, "-c", probe, json.dumps({"statements": statements, "literal": literal[1]})],
                            capture_output=True, text=True, timeout=120)
    assert parsed.returncode == 0, parsed.stderr
    assert json.loads(parsed.stdout.strip().splitlines()[-1])["p"] == password
    assert f"GRANT SELECT ON `{env['CLICKHOUSE_DB']}`.* TO `{env['GRAFANA_CLICKHOUSE_USER']}`;" == statements[1]


# --------------------------------------------------------------------------- the image


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_dockerfile_builds_mcpsift_all_as_a_non_root_user() -> None:
    import json

    steps = _dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [rest for word, rest in steps if word == "RUN"]
    assert any(re.search(r"pip install (\"\.\[all\]\"|'\.\[all\]'|\.\[all\])(\s|$)", r) for r in runs), runs
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry = [json.loads(rest) for word, rest in steps if word == "ENTRYPOINT"]
    assert entry == [["mcpsift"]] and "mcpsift" in pyproject["project"]["scripts"]
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry_at = next(i for i, (w, _) in enumerate(steps) if w == "ENTRYPOINT")
    assert max(i for i, (w, _) in enumerate(steps) if w == "USER") < entry_at
    exposed = {p for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert {"8765", "9464"} <= exposed
    # everything the distribution is built from is copied, and the context lets it in
    copied = {src.rstrip("/") for word, rest in steps if word == "COPY" for src in shlex.split(rest)[:-1]}
    needed = {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}
    needed |= {"pyproject.toml", pyproject["project"]["readme"]}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", ".dockerignore should exclude everything, then let the sources in"
    assert needed <= {line[1:] for line in ignore if line.startswith("!")}
    assert not any(line.startswith("!") and ".env" in line for line in ignore)
    # the directories named volumes are mounted on exist in the image, owned by its user
    made = " ".join(r for r in runs if "mkdir" in r)
    for name, service in mcpsift_services().items():
        for kind, _, target in volume_mounts(service):
            if kind == "volume":
                assert target in made and "chown" in made, f"{name}: {target} is not made (and chowned) in the image"


# --------------------------------------------------------------------------- the docs


def test_the_readme_steps_match_the_compose_file() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Run distributed"):].split("\n## ", 1)[0]
    found = services()
    assert "cp deploy/env.example .env" in section and ENV_EXAMPLE.is_file()
    for name in SECRETS:
        assert name in section, f"the README does not say to set {name}"
    # the first keys: made by the api service on its first start, into its keys file
    keys_file = found["api"]["environment"]["MCPSIFT_AUTH__BOOTSTRAP_KEYS_FILE"]
    assert f"docker compose exec api cat {keys_file}" in section
    runs = re.findall(r"docker compose run --rm (\S+) ([^`\n#]+)", section)
    assert runs, "the README shows no `docker compose run` command"
    for service, args in runs:
        assert service in mcpsift_services(), f"README runs mcpsift in {service}, not an mcpsift service"
        assert not mcpsift_cli_errors(shlex.split(args)), mcpsift_cli_errors(shlex.split(args))
    for service in re.findall(r"--scale (\w+)=", section) + re.findall(r"docker compose restart (\w+)", section):
        assert service in found, service
    kafka_port = str(found["kafka"]["ports"][0]).split(":")[1]
    assert f'KafkaPublisher("localhost:{kafka_port}"' in section and "kafka:9092" in section
    assert "http://127.0.0.1:8765" in section and "http://127.0.0.1:3000" in section
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "\n## Run distributed\n" in operations and "<!-- figures: bench/bench_worker.py -->" in operations
