"""The file output (JSON lines, size rotation) on a real file system."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Sequence

import pytest

from mcpsift.alerts import Alert
from mcpsift.streams.sinks.file import PartialWrite, RotatingLineWriter
from mcpsift.streams.sinks.outputs import (
    Outcome,
    OutputConfigError,
    alert_document,
    build_outputs,
    clean_alert,
    parse_output_configs,
)
from tests.helpers.outputs import hostile_alert, make_alert, send_through


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def _sends(config: dict[str, Any], batches: Sequence[Sequence[Alert]]) -> list[list[Outcome]]:
    """Several batches through one output instance (as the engine does)."""
    (output,) = build_outputs(parse_output_configs([config]))

    async def run() -> list[list[Outcome]]:
        await output.open()
        try:
            return [await output.send([clean_alert(a) for a in batch]) for batch in batches]
        finally:
            await output.close()

    return asyncio.run(run())


@pytest.mark.parametrize("fsync", [False, True])
def test_lines_are_the_alert_documents(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "new" / "dir" / "alerts.jsonl"  # parents are created
    alerts = [make_alert(session_id=f"s{i}", severity=sev) for i, sev in enumerate(["low", "high", "critical"])]
    outcomes = send_through({"type": "file", "path": str(path), "fsync": fsync}, alerts)
    assert [o.kind for o in outcomes] == ["delivered"] * 3
    lines = _lines(path)
    assert len(lines) == 3
    for line, alert in zip(lines, alerts):
        assert line == json.dumps(alert_document(alert), separators=(",", ":"), ensure_ascii=False).encode()
        assert json.loads(line) == alert_document(alert)


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b'{"earlier":1}\n')
    first, second = make_alert(session_id="a"), make_alert(session_id="b")
    assert [[o.kind for o in r] for r in _sends({"type": "file", "path": str(path)}, [[first], [second]])] == [
        ["delivered"],
        ["delivered"],
    ]
    expected = [{"earlier": 1}, alert_document(first), alert_document(second)]
    assert [json.loads(line) for line in _lines(path)] == expected


def test_hostile_alert_stays_one_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    alert = hostile_alert()
    assert send_through({"type": "file", "path": str(path)}, [alert])[0].kind == "delivered"
    data = path.read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert b"\r" not in data and "\u2028".encode() not in data  # escaped, not raw
    text = data.decode("utf-8")  # strict: valid UTF-8
    assert all(ord(c) >= 0x20 for c in text[:-1])
    document = json.loads(text)
    assert document == alert_document(clean_alert(alert))
    assert len(document["description"]) == 20_000 and "\u2028" in document["title"]


def test_rotation_keeps_whole_lines_and_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    alerts = [make_alert(session_id=f"session-{i}") for i in range(9)]
    line_size = len(json.dumps(alert_document(alerts[0]), separators=(",", ":"))) + 1
    config = {"type": "file", "path": str(path), "max_bytes": 2 * line_size + 10, "backups": 2}
    outcomes = _sends(config, [alerts[:4], alerts[4:5], alerts[5:]])
    assert all(o.kind == "delivered" for batch in outcomes for o in batch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
    # 2 lines a file: [0 1] [2 3] [4 5] [6 7] [8]; the two oldest files were dropped
    kept = [f"{path}.2", f"{path}.1", str(path)]
    ids = [[json.loads(line)["session_id"] for line in _lines(Path(p))] for p in kept]
    assert ids == [["session-4", "session-5"], ["session-6", "session-7"], ["session-8"]]


def test_writer_never_splits_a_line(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = RotatingLineWriter(path, max_bytes=100, backups=10)
    sizes = [30, 30, 30, 9, 60, 150, 1, 99, 100, 45, 45]
    lines = [bytes([97 + i]) * (n - 1) + b"\n" for i, n in enumerate(sizes)]
    writer.write_lines(lines[:5])
    writer.write_lines(lines[5:])
    writer.close()
    files = [Path(f"{path}.{i}") for i in range(10, 0, -1) if Path(f"{path}.{i}").exists()] + [path]
    contents = [f.read_bytes() for f in files]
    assert b"".join(contents) == b"".join(lines)  # nothing lost, order kept
    for data in contents:
        assert data.endswith(b"\n")
        assert len(data) <= 100 or data.count(b"\n") == 1  # only a line longer than max_bytes gets a bigger file
    assert [len(d) for d in contents] == [99, 60, 150, 100, 100, 90]


def test_no_backups_keeps_only_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = RotatingLineWriter(path, max_bytes=10, backups=0)
    writer.write_lines([b"one\n", b"two\n", b"three\n", b"four\n"])
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["out.log"] and path.read_bytes() == b"four\n"


def test_file_moved_away_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = RotatingLineWriter(path)
    writer.write_lines([b"a\n"])
    path.rename(tmp_path / "shipped.log")  # e.g. logrotate
    writer.write_lines([b"b\n"])
    writer.close()
    assert (tmp_path / "shipped.log").read_bytes() == b"a\n" and path.read_bytes() == b"b\n"


def test_unwritable_path_is_retry_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where a folder should be")
    path = blocker / "alerts.jsonl"
    (output,) = build_outputs(parse_output_configs([{"type": "file", "path": str(path)}]))
    alerts = [make_alert(session_id="a"), make_alert(session_id="b")]

    async def run() -> tuple[list[Outcome], list[Outcome]]:
        await output.open()
        failed = await output.send(alerts)
        blocker.unlink()  # the operator fixes the path
        retried = await output.send(alerts)
        await output.close()
        return failed, retried

    failed, retried = asyncio.run(run())
    assert [o.kind for o in failed] == ["retry", "retry"]
    assert failed[0].error.startswith(f"cannot write {path}: ") and "permissions" in failed[0].error
    assert [o.kind for o in retried] == ["delivered", "delivered"]
    assert [json.loads(line) for line in _lines(path)] == [alert_document(a) for a in alerts]


def test_directory_as_path_is_retry(tmp_path: Path) -> None:
    outcomes = send_through({"type": "file", "path": str(tmp_path)}, [make_alert()])
    assert outcomes[0].kind == "retry" and "Is a directory" in outcomes[0].error


def test_full_disk_is_retry_for_the_unwritten_lines() -> None:
    """/dev/full fails every write with ENOSPC, like a full disk."""
    writer = RotatingLineWriter(Path("/dev/full"))
    with pytest.raises(PartialWrite) as err:
        writer.write_lines([b"x\n"])
    assert err.value.written == 0 and "No space left on device" in str(err.value)
    outcomes = send_through({"type": "file", "path": "/dev/full"}, [make_alert(), make_alert(session_id="b")])
    assert [o.kind for o in outcomes] == ["retry", "retry"] and "No space left on device" in outcomes[0].error


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputConfigError, match=r"outputs\[0\]: path: Field required"):
        parse_output_configs([{"type": "file"}])
    with pytest.raises(OutputConfigError, match=r"max_bytes: Input should be greater than or equal to 1"):
        parse_output_configs([{"type": "file", "path": str(tmp_path / "a"), "max_bytes": 0}])
    with pytest.raises(OutputConfigError, match=r"unknown key 'rotate' for type file"):
        parse_output_configs([{"type": "file", "path": str(tmp_path / "a"), "rotate": True}])
