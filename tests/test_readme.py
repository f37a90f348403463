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
