"""The reorder buffer releases in (event time, arrival) order within the lateness."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mcpsift.streams.reorder import ReorderBuffer


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=200), st.integers(0, 50))
def test_release_order_is_event_time_then_arrival(times: list[float], every: int) -> None:
    buf = ReorderBuffer(lateness_s=30)
    out = []
    for i, t in enumerate(times):
        buf.push(t, i)
        if every and i % every == 0:
            out.extend(buf.pop_ready())
    out.extend(buf.drain())
    if times == sorted(times):
        assert [i for _, _, i in out] == list(range(len(times)))
    # everything comes out exactly once
    assert sorted(i for _, _, i in out) == list(range(len(times)))
    # and each release batch is ordered; with lateness >= the disorder, globally ordered
    if all(max(times[: k + 1]) - times[k] <= 30 for k in range(len(times))):
        assert [t for t, _, _ in out] == sorted(times)


def test_only_events_past_the_lateness_are_released() -> None:
    buf = ReorderBuffer(lateness_s=10)
    for t in (100.0, 95.0, 108.0, 111.0):
        buf.push(t, t)
    assert [i for _, _, i in buf.pop_ready()] == [95.0, 100.0]  # watermark 111 - 10
    assert len(buf) == 2


def test_wall_clock_releases_old_events_and_ignores_future_clocks() -> None:
    buf = ReorderBuffer(lateness_s=10)
    buf.push(50.0, "old", wall_now=1_000.0)
    buf.push(9_999.0, "future", wall_now=1_000.0)  # a producer clock far ahead
    assert buf.max_time == 1_010.0 and buf.future_events == 1  # not 9,999
    assert [i for _, _, i in buf.pop_ready(wall_now=1_000.0)] == ["old"]
    # ...and it does not wait until 9,999 to be released (memory stays bounded)
    assert [i for _, _, i in buf.pop_ready(wall_now=1_020.0)] == ["future"]


def test_late_events_are_counted_not_dropped() -> None:
    buf = ReorderBuffer(lateness_s=1)
    buf.push(100.0, "a")
    buf.push(200.0, "b")
    buf.pop_ready()
    buf.push(50.0, "late")
    assert buf.late_events == 1
    assert "late" in [i for _, _, i in buf.pop_ready()]


def test_shuffled_within_lateness_equals_sorted() -> None:
    rng = random.Random(3)
    times = [i * 0.5 for i in range(2_000)]
    arrival = sorted(times, key=lambda t: t + rng.uniform(0, 20))
    buf = ReorderBuffer(lateness_s=25)
    out = []
    for t in arrival:
        buf.push(t, t)
        out.extend(i for _, _, i in buf.pop_ready())
    out.extend(i for _, _, i in buf.drain())
    assert out == times and buf.late_events == 0
