"""The distributed runner's Kafka topics (``mcpsift topics create``).

Five topics, all named in ``settings.kafka``:

========================  ==================  ===========================================
topic                     partitions          kept
========================  ==================  ===========================================
events (mcp.events)       ``partitions``      ``events_retention_hours`` (delete)
keyed (mcp.events.keyed)  ``partitions``      ``keyed_retention_hours`` (delete)
alerts (mcp.alerts)       ``alerts_partitions``  ``alerts_retention_hours`` (delete)
deadletter                ``deadletter_partitions``  ``deadletter_retention_hours`` (delete)
state changelog           ``partitions``      compacted (the detector state, by key)
========================  ==================  ===========================================

Creating is idempotent: a topic that exists is left alone, and reported with
its partition count when that differs from the settings (a topic's key →
partition mapping changes when partitions are added, so mcpsift never alters
an existing topic; see docs/operations.md on sizing).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Optional

from mcpsift.settings import KafkaSettings

from .app import changelog_topic, kafka_client_options

__all__ = ["TopicSpec", "topic_specs", "create_topics", "TopicResult", "missing_topics"]

_TOPIC_ALREADY_EXISTS = 36
_HOUR_MS = 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    role: str


@dataclass
class TopicResult:
    spec: TopicSpec
    status: str  # "created" | "exists" | "exists-different"
    partitions: Optional[int] = None  # of an existing topic
    error: Optional[str] = None


def topic_specs(kafka: KafkaSettings) -> list[TopicSpec]:
    def kept(hours: float) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(int(hours * _HOUR_MS))}

    return [
        TopicSpec(kafka.events_topic, kafka.partitions, kept(kafka.events_retention_hours), "events in"),
        TopicSpec(kafka.keyed_topic, kafka.partitions, kept(kafka.keyed_retention_hours), "repartitioned by state key"),
        TopicSpec(kafka.alerts_topic, kafka.alerts_partitions, kept(kafka.alerts_retention_hours), "alerts out"),
        TopicSpec(kafka.deadletter_topic, kafka.deadletter_partitions, kept(kafka.deadletter_retention_hours), "dead letters"),
        TopicSpec(changelog_topic(kafka), kafka.partitions, {"cleanup.policy": "compact"}, "detector state changelog"),
    ]


async def _create(kafka: KafkaSettings, timeout_s: float) -> list[TopicResult]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    specs = topic_specs(kafka)
    admin = AIOKafkaAdminClient(request_timeout_ms=int(timeout_s * 1000), **kafka_client_options(kafka))
    await admin.start()
    try:
        existing = await _partition_counts(admin, [s.name for s in specs])
        results: list[TopicResult] = []
        wanted = [s for s in specs if s.name not in existing]
        errors: dict[str, tuple[int, str]] = {}
        if wanted:
            response = await admin.create_topics(
                [NewTopic(s.name, num_partitions=s.partitions, replication_factor=kafka.replication_factor,
                          topic_configs=s.config) for s in wanted]
            )
            for entry in getattr(response, "topic_errors", []):
                name, code = entry[0], entry[1]
                message = entry[2] if len(entry) > 2 else ""
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    errors[name] = (code, message or "")
        for s in specs:
            if s.name in errors:
                code, message = errors[s.name]
                results.append(TopicResult(s, "error", error=f"Kafka error {code}: {message}".strip()))
            elif s.name in existing:
                n = existing[s.name]
                results.append(TopicResult(s, "exists" if n == s.partitions else "exists-different", n))
            else:
                results.append(TopicResult(s, "created", s.partitions))
        return results
    finally:
        await admin.close()


async def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    present = set(await admin.list_topics())
    asked = [n for n in names if n in present]
    if not asked:
        return {}
    described = await admin.describe_topics(asked)
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}


def create_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> list[TopicResult]:
    """Create every topic that does not exist yet; one result per topic."""
    return asyncio.run(_create(kafka, timeout_s))


async def _missing(kafka: KafkaSettings, wait_s: float) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(request_timeout_ms=5000, **kafka_client_options(kafka))
        try:
            await admin.start()
            present = set(await admin.list_topics())
            return [s.name for s in topic_specs(kafka) if s.name not in present]
        except Exception:
            if time.monotonic() >= deadline:
                raise
        finally:
            await admin.close()
        await asyncio.sleep(1.0)


def missing_topics(kafka: KafkaSettings, wait_s: float = 30.0) -> list[str]:
    """The topics of :func:`topic_specs` the broker does not have, once it answers
    (retried for ``wait_s``: a worker may start before its broker); raises the last
    connection error when it never does."""
    import logging

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # one clear error from the caller, not one per attempt
    try:
        return asyncio.run(_missing(kafka, wait_s))
    finally:
        quiet.setLevel(level)
