"""The README's commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sh_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    blocks = _sh_blocks((ROOT / "README.md").read_text())
    serve, tests = blocks[0], blocks[1]
    assert serve.endswith("mcpsift serve") and "pip install -e '.[all]'" in serve
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_curl_example_posts_a_file_that_exists() -> None:
    text = (ROOT / "README.md").read_text()
    assert "@docs/examples.jsonl" in text and (ROOT / "docs" / "examples.jsonl").exists()


def test_docs_keep_the_spec_examples_in_step() -> None:
    shared = ROOT.parent / "shared" / "spec" / "examples.jsonl"
    if shared.exists():  # beside the project root on our machines and in CI
        assert (ROOT / "docs" / "examples.jsonl").read_bytes() == shared.read_bytes()


def test_the_instrumentation_snippets_run_as_written(tmp_path, monkeypatch) -> None:
    """The README's "Instrument your MCP server" code, executed on a real MCPServer."""
    import re

    from mcp.server.mcpserver import MCPServer

    from mcpsift.collectors.asgi import McpsiftASGIMiddleware
    from mcpsift.collectors.mcp_sdk import McpsiftMiddleware
    from mcpsift.collectors.verifier import AuditingTokenVerifier

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Instrument your MCP server") :].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2

    class MyVerifier:
        def __init__(self, *args: object) -> None:
            pass

        async def verify_token(self, token: str) -> None:
            return None

    monkeypatch.chdir(tmp_path)  # the snippet's spool dir is absolute: point it here
    server = MCPServer("crm")
    namespace = {"server": server, "KEY": b"k" * 32, "RESOURCE": "https://mcp.example.com/mcp", "MyVerifier": MyVerifier}
    code = "\n".join(blocks).replace("/var/lib/mcp/spool", str(tmp_path / "spool"))
    exec(compile(code, "README.md", "exec"), namespace)
    try:
        assert any(isinstance(m, McpsiftMiddleware) for m in server._lowlevel_server.middleware)
        assert isinstance(namespace["token_verifier"], AuditingTokenVerifier)
        assert isinstance(namespace["app"], McpsiftASGIMiddleware)
    finally:
        namespace["sink"].close(timeout=1)


def test_the_investigation_walkthrough_runs_as_written(serve_factory, tmp_path) -> None:
    """The README's "Investigate an incident" shell block, run with bash and curl
    against a real serve holding the example session."""
    import os
    import re
    import shutil
    import subprocess

    assert shutil.which("curl"), "the walkthrough needs curl: apt-get install curl"
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Investigate an incident") :].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    server = serve_factory(allowed_lateness_s="1")
    examples = (Path(__file__).resolve().parents[1] / "docs" / "examples.jsonl").read_bytes()
    assert server.post("/v1/events", content=examples).status_code == 202
    deadline = __import__("time").monotonic() + 30
    while not server.get("/v1/alerts", params={"rule_id": "auth.token_reuse_across_audiences"}).json()["items"]:
        assert __import__("time").monotonic() < deadline, "the example's alert was not raised"
        __import__("time").sleep(0.2)
    script = "set -euo pipefail\n" + block.replace("http://127.0.0.1:8765", server.url)
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "MCPSIFT_KEY": server.admin_key})
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "https://mcp.acme.example/billing" in out and "https://mcp.acme.example/crm" in out
    assert "4f6c1e0a-9b3d-4c51-8f2e-0d8b7a6c5e41" in out and "acknowledged" in out
    exported = (tmp_path / "session.ndjson").read_text().splitlines()
    assert len(exported) == 7  # the session's seven events, from session_start to session_end
