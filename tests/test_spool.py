"""The on-disk spool: order, checksums, torn tails, restarts, bounds, fsync policies."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mcpsift.collectors import spool as spool_mod
from mcpsift.collectors.spool import RECORD_HEADER, SEGMENT_HEADER, Spool, SpoolLocked, spool_status

REPO = Path(__file__).resolve().parents[1]


def _payload(i: int, size: int = 40) -> bytes:
    head = b"rec-%06d:" % i
    return head + bytes([97 + i % 26]) * max(0, size - len(head))


def _drain(s: Spool, batch: int = 37) -> list[bytes]:
    out: list[bytes] = []
    while True:
        b = s.peek(batch)
        if not b.payloads:
            return out
        out.extend(b.payloads)
        s.commit(b)


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


def test_records_come_back_in_order_across_segments_and_delivered_segments_go(tmp_path: Path) -> None:
    records = [_payload(i, 20 + (i * 37) % 700) for i in range(600)]
    with Spool(tmp_path, max_bytes=4 * 1024 * 1024, segment_bytes=4096) as s:
        assert s.append_many(records[:300]) == 300
        for r in records[300:]:
            assert s.append(r)
        assert s.records == 600
        assert len(_segments(tmp_path)) > 20
        first = s.peek(10)
        assert first.payloads == records[:10]
        assert s.peek(10).payloads == records[:10], "peek does not consume"
        assert _drain(s) == records
        assert s.records == 0 and s.nbytes == 0
        assert len(_segments(tmp_path)) == 1, "fully delivered segments are deleted"
        assert s.disk_bytes == SEGMENT_HEADER
        assert s.append(b"after")
        assert _drain(s) == [b"after"]


def test_a_restart_resumes_after_what_was_committed(tmp_path: Path) -> None:
    records = [_payload(i) for i in range(100)]
    with Spool(tmp_path, segment_bytes=1024) as s:
        s.append_many(records)
        s.commit(s.peek(40))
        assert len(s.peek(10)) == 10  # read but not committed: must come back
    with Spool(tmp_path, segment_bytes=1024) as s:
        assert s.records == 60
        assert s.status()["bytes"] == 60 * (RECORD_HEADER + 40)
        assert _drain(s) == records[40:]
    with Spool(tmp_path, segment_bytes=1024) as s:
        assert s.records == 0
        assert s.peek().payloads == []


_CRASH_SCRIPT = r"""
import os, sys, time
from mcpsift.collectors.spool import Spool
d, policy = sys.argv[1], sys.argv[2]
s = Spool(d, fsync=policy, segment_bytes=2048)
for i in range(300):
    assert s.append(b"rec-%06d:" % i + b"x" * 30)
s.commit(s.peek(120))
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_kill_9_loses_nothing_that_append_returned_for(tmp_path: Path, policy: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_SCRIPT, str(tmp_path), policy],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == b"ready", proc.stderr.read().decode()  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert spool_status(tmp_path)["in_use"] is False, "the lock dies with the process"
    with Spool(tmp_path, fsync=policy, segment_bytes=2048) as s:
        got = _drain(s)
    assert got == [b"rec-%06d:" % i + b"x" * 30 for i in range(120, 300)]


def test_a_torn_tail_is_cut_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    records = [_payload(i, 30) for i in range(5)]
    golden = tmp_path / "golden"
    with Spool(golden) as s:
        s.append_many(records)
    seg = _segments(golden)[0]
    size = seg.stat().st_size
    last_start = size - (RECORD_HEADER + 30)
    for cut in range(last_start, size + 1):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(golden, d)
        os.truncate(_segments(d)[0], cut)
        with Spool(d) as s:
            whole = cut == size
            assert s.records == (5 if whole else 4), cut
            assert s.status()["torn_tail_bytes"] == (0 if whole else cut - last_start)
            assert s.append(b"new")  # appends continue after the last whole record
            assert _drain(s) == (records if whole else records[:4]) + [b"new"], cut
        shutil.rmtree(d)


def test_a_segment_torn_inside_its_header_opens_empty(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=1024) as s:
        s.append_many([_payload(i) for i in range(60)])
    segs = _segments(tmp_path)
    os.truncate(segs[-1], 5)
    with Spool(tmp_path, segment_bytes=1024) as s:
        got = _drain(s)
    per_segment = (1024 - SEGMENT_HEADER) // (RECORD_HEADER + 40) + 1
    assert got == [_payload(i) for i in range(len(got))]
    assert 60 - per_segment <= len(got) < 60


@pytest.mark.parametrize("damage", ["payload", "length"])
def test_a_damaged_record_in_an_older_segment_skips_the_rest_of_it_only(tmp_path: Path, damage: str) -> None:
    with Spool(tmp_path, segment_bytes=1024) as s:
        s.append_many([_payload(i) for i in range(100)])
    segs = _segments(tmp_path)
    assert len(segs) >= 4
    victim = segs[1]
    with open(victim, "r+b") as f:
        rec = SEGMENT_HEADER + 2 * (RECORD_HEADER + 40)  # the third record of segment 2
        if damage == "payload":
            f.seek(rec + RECORD_HEADER + 5)
            f.write(b"#")
        else:
            f.seek(rec)
            f.write((2**31).to_bytes(4, "little"))
    per_segment = 1 + (1024 - SEGMENT_HEADER - 1) // (RECORD_HEADER + 40)
    with Spool(tmp_path, segment_bytes=1024) as s:
        st = s.status()
        assert st["corrupt_records"] == 1 and st["corrupt_bytes"] > 0
        got = _drain(s)
    expected = [_payload(i) for i in range(100) if not (per_segment + 2 <= i < 2 * per_segment)]
    assert got == expected


def test_damage_found_while_reading_is_skipped_without_a_crash(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=1024) as s:
        s.append_many([_payload(i) for i in range(100)])
        victim = _segments(tmp_path)[0]
        with open(victim, "r+b") as f:  # the file changes under the open spool
            f.seek(SEGMENT_HEADER + RECORD_HEADER + 1)
            f.write(b"#")
        got = _drain(s)
        assert s.status()["corrupt_records"] == 1
        assert got[0] != _payload(0) and got == [p for p in got if p.startswith(b"rec-")]
        assert got[-1] == _payload(99)
        assert s.append(b"still works") and _drain(s) == [b"still works"]


def test_a_damaged_cursor_redelivers_rather_than_loses(tmp_path: Path) -> None:
    records = [_payload(i) for i in range(30)]
    with Spool(tmp_path) as s:
        s.append_many(records)
        s.commit(s.peek(10))
    (tmp_path / "cursor").write_bytes(b"garbage")
    with Spool(tmp_path) as s:
        got = _drain(s)
    assert got == records  # one segment: everything again, nothing lost


def test_drop_newest_when_full_counts_and_recovers(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=4096, segment_bytes=1024, full_policy="drop_newest") as s:
        accepted = sum(s.append(_payload(i, 100)) for i in range(100))
        assert 0 < accepted < 100
        st = s.status()
        assert st["dropped"] == 100 - accepted
        assert st["disk_bytes"] <= 4096
        assert s.append_many([_payload(i, 100) for i in range(5)]) == 0
        got = _drain(s)
        assert got == [_payload(i, 100) for i in range(accepted)], "the oldest are kept, the newest dropped"
        assert s.append(_payload(0, 100)), "room again once delivered"


def test_block_when_full_waits_for_a_commit(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=4096, segment_bytes=1024, full_policy="block") as s:
        while s.append(b"waiting", timeout=0):  # fill it with records of the size that will wait
            pass
        result: list[bool] = []
        t = threading.Thread(target=lambda: result.append(s.append(b"waiting")))
        t.start()
        time.sleep(0.3)
        assert t.is_alive() and not result, "append must wait while the spool is full"
        s.commit(s.peek(1000))
        t.join(5)
        assert result == [True]
        assert _drain(s) == [b"waiting"]


def test_block_gives_up_after_block_timeout(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=4096, segment_bytes=1024, full_policy="block", block_timeout=0.2) as s:
        while s.append(b"x", timeout=0):
            pass
        dropped = s.status()["dropped"]
        t = time.monotonic()
        assert s.append(b"x") is False
        assert 0.15 <= time.monotonic() - t < 2
        assert s.status()["dropped"] == dropped + 1


class _SyncCounter:
    def __init__(self) -> None:
        self.calls = 0
        self.real = spool_mod._datasync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.real(fd)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> _SyncCounter:
    counter = _SyncCounter()
    monkeypatch.setattr(spool_mod, "_datasync", counter)
    return counter


def test_fsync_always_syncs_every_append(tmp_path: Path, syncs: _SyncCounter) -> None:
    with Spool(tmp_path, fsync="always") as s:
        before = syncs.calls
        for i in range(20):
            s.append(_payload(i))
            assert syncs.calls >= before + i + 1
        before = syncs.calls
        s.append_many([_payload(i) for i in range(50)])
        assert syncs.calls == before + 1, "one sync per append_many"


def test_fsync_never_never_syncs(tmp_path: Path, syncs: _SyncCounter) -> None:
    s = Spool(tmp_path, fsync="never", segment_bytes=1024)
    s.append_many([_payload(i) for i in range(200)])  # several segment roll-overs too
    for i in range(50):
        s.append(_payload(i))
    s.commit(s.peek(1000))
    s.close()
    assert syncs.calls == 0


def test_fsync_interval_syncs_at_most_once_per_interval(tmp_path: Path, syncs: _SyncCounter) -> None:
    with Spool(tmp_path, fsync="interval", fsync_interval=0.3) as s:
        before = syncs.calls
        t = time.monotonic()
        for i in range(200):
            s.append(_payload(i))
        elapsed = time.monotonic() - t
        assert syncs.calls - before <= 1 + int(elapsed / 0.3)
        s.append(b"late")
        time.sleep(0.35)
        calls = syncs.calls
        s.sync_if_due()
        assert syncs.calls == calls + 1, "sync_if_due syncs what waited longer than the interval"
        s.sync_if_due()
        assert syncs.calls == calls + 1, "nothing new: no second sync"


def test_one_process_per_spool_directory(tmp_path: Path) -> None:
    with Spool(tmp_path) as s:
        s.append_many([_payload(i) for i in range(7)])
        with pytest.raises(SpoolLocked, match="spool_dir"):
            Spool(tmp_path)
        st = spool_status(tmp_path)
        assert st["in_use"] is True and st["pid"] == os.getpid()
        assert st["records"] == 7 and st["bytes"] == 7 * (RECORD_HEADER + 40)
    st = spool_status(tmp_path)
    assert st["in_use"] is False and st["records"] == 7


def test_bad_arguments_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="always"):
        Spool(tmp_path / "a", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drop_newest"):
        Spool(tmp_path / "b", full_policy="wait")  # type: ignore[arg-type]
    with Spool(tmp_path / "c", max_bytes=4096) as s:
        with pytest.raises(ValueError, match="max_bytes"):
            s.append(b"x" * 5000)
    with pytest.raises(FileNotFoundError, match="spool_dir"):
        spool_status(tmp_path / "missing")
