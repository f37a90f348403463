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
