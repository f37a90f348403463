"""The offline runner: one process or two, the same bytes out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mcpsift.bench.gen import generate
from mcpsift.streams.offline import detect_file, detect_lines


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("offline") / "traffic.jsonl"
    lines = list(generate(30_000, seed=5, shuffle_within_s=10.0))
    lines.insert(100, b"{not json")
    lines.insert(200, b"")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_two_processes_write_the_same_alerts_as_one(traffic: Path) -> None:
    one, two = io.BytesIO(), io.BytesIO()
    invalid_one: list[int] = []
    invalid_two: list[int] = []
    r1 = detect_file(traffic, one, processes=1, on_invalid=lambda n, _: invalid_one.append(n))
    r2 = detect_file(traffic, two, processes=2, on_invalid=lambda n, _: invalid_two.append(n))
    assert r2.processes == 2 and r1.processes == 1
    assert one.getvalue() == two.getvalue() and r1.alerts > 0
    assert invalid_one == invalid_two == [101]
    assert (r1.lines, r1.events, r1.late_events) == (r2.lines, r2.events, r2.late_events)


def test_detect_lines_equals_detect_file(traffic: Path) -> None:
    direct = io.BytesIO()
    with open(traffic, "rb") as handle:
        detect_lines(handle, direct)
    via_file = io.BytesIO()
    detect_file(traffic, via_file, processes=2)
    assert direct.getvalue() == via_file.getvalue()


def test_progress_is_reported_in_bytes(traffic: Path) -> None:
    seen: list[int] = []
    detect_file(traffic, io.BytesIO(), processes=2, on_progress=seen.append, progress_every=1 << 20)
    assert seen and seen == sorted(seen) and seen[-1] <= traffic.stat().st_size


def test_an_unreadable_file_raises_in_the_caller(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        detect_file(tmp_path / "missing.jsonl", io.BytesIO(), processes=2)


def test_two_processes_agree_on_every_rule_of_demo_traffic(tmp_path: Path) -> None:
    """The reader process runs the stateless detectors and some stateful ones;
    on traffic that raises alerts of every family the bytes must not change."""
    from collections import Counter

    from mcpsift.demo.generate import generate
    from mcpsift.settings import load_settings

    generate(tmp_path / "demo", seed=3, hours=4.0, progress=False)
    settings = load_settings(tmp_path / "demo" / "config.yaml", data_dir=tmp_path / "data")
    one, two = io.BytesIO(), io.BytesIO()
    detect_file(tmp_path / "demo" / "events.jsonl", one, settings, processes=1)
    detect_file(tmp_path / "demo" / "events.jsonl", two, settings, processes=2)
    assert one.getvalue() == two.getvalue()
    rules = Counter(json.loads(line)["rule_id"] for line in one.getvalue().splitlines())
    assert len(rules) >= 20, rules  # most of the catalogue took part
