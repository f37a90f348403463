"""Packaging promises: light imports, the namespace layout, the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = ("faust", "chdb", "sklearn", "fastapi", "clickhouse_connect", "uvicorn")


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(','.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.strip().split(","))


def test_core_and_collectors_import_nothing_heavy() -> None:
    for statement in ("import mcpsift", "import mcpsift.collectors", "import mcpsift.events"):
        loaded = _imported_after(statement)
        assert not loaded.intersection(HEAVY), f"{statement} imported {loaded.intersection(HEAVY)}"


def test_hooks_and_publishers_load_their_integrations_only_when_used() -> None:
    # what an MCP server imports to install the hooks: nothing of the pipeline, and the
    # network clients (httpx, aiokafka) only when a publisher is created
    lazy = HEAVY + ("httpx", "aiokafka", "opentelemetry", "jwt")
    for module in ("build", "redact", "verifier", "asgi", "sink", "spool", "publishers"):
        loaded = _imported_after(f"import mcpsift.collectors.{module}")
        assert not loaded.intersection(lazy), f"mcpsift.collectors.{module} imported {loaded.intersection(lazy)}"
    # the SDK middleware adds nothing heavy to what the MCP SDK itself loads
    sdk_alone = _imported_after("import mcp.server.mcpserver")
    added = _imported_after("import mcpsift.collectors.mcp_sdk") - sdk_alone
    assert not added.intersection(lazy), f"mcpsift.collectors.mcp_sdk imported {added.intersection(lazy)}"


def test_subpackages_map_to_the_top_level_folders() -> None:
    import mcpsift.api
    import mcpsift.collectors
    import mcpsift.detectors
    import mcpsift.streams

    for module, folder in (
        (mcpsift.collectors, "collectors"),
        (mcpsift.streams, "streams"),
        (mcpsift.detectors, "detectors"),
        (mcpsift.api, "api"),
    ):
        assert module.__file__ is not None and f"/{folder}/__init__.py" in module.__file__


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "mcpsift"
    assert script.exists(), f"console script missing at {script}: pip install -e '.[all,test]'"
    out = subprocess.run([str(script), "version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == __import__("mcpsift").__version__


def test_fingerprint_is_keyed_when_a_key_is_given() -> None:
    from mcpsift.collectors import fingerprint_token

    plain = fingerprint_token("secret-token")
    keyed = fingerprint_token("secret-token", key=b"k")
    assert plain.startswith("sha256:") and keyed.startswith("hmac-sha256:") and plain[7:] != keyed[12:]
    assert "secret-token" not in plain + keyed
