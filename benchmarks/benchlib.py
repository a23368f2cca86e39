"""Helpers shared by the benchmark scripts: scratch folders, a broker of their own, and what
they read about processes from /proc (Linux; no psutil)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cryptolake.common.trade import TOPIC_CONFIG
from cryptolake.stack.kafka import KafkaBroker, KafkaBrokerConfig, free_port


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring's layout kept, every flag's default shown."""


def build_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the docstring's first paragraph, the rest its epilog."""
    first, _, rest = doc.partition("\n\n")
    parser = argparse.ArgumentParser(description=first, epilog=rest, formatter_class=HelpFormatter)
    parser.add_argument(
        "--work-dir", type=Path, help="parent of the scratch folder (broker data, tables, logs)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (tables, logs) at the end"
    )
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    return parser


@contextmanager
def scratch_dir(prefix: str, parent: Path | None, keep: bool) -> Iterator[Path]:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Broker:
    bootstrap_servers: str
    pid: int | None  # None: a broker this script did not start


@contextmanager
def kafka_broker(root: Path, bootstrap_servers: str | None) -> Iterator[Broker]:
    """The given broker, or a fresh one (1 GiB heap, free loopback ports, data under root)."""
    if bootstrap_servers is not None:
        yield Broker(bootstrap_servers, None)
        return
    config = KafkaBrokerConfig(
        data_dir=root / "kafka", port=free_port(), controller_port=free_port(), heap="1g"
    )
    with KafkaBroker(config) as broker:
        assert broker.process is not None
        yield Broker(broker.bootstrap_servers, broker.process.pid)


def create_topic(bootstrap_servers: str, topic: str, partitions: int) -> None:
    """A topic with the contract's ``TOPIC_CONFIG``, as the producer and the operator make it."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    new = NewTopic(topic, partitions, 1, config=dict(TOPIC_CONFIG))
    for future in admin.create_topics([new]).values():
        future.result(timeout=30)


def peak_rss_mib(pid: int | str) -> float | None:
    """VmHWM (peak resident set) of a process, in MiB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def java_children(parent: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """Pids of the ``java`` processes whose parent is ``parent``, except those in ``exclude``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …": comm may hold spaces or parentheses, so split at the last ")".
        head, _, rest = text.rpartition(")")
        comm = head.partition("(")[2]
        fields = rest.split()
        pid = int(stat.parent.name)
        if comm == "java" and len(fields) > 1 and int(fields[1]) == parent and pid not in exclude:
            found.append(pid)
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    # Fields 14 and 15 of stat (utime, stime), counted from "state" as field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def topic_message_count(bootstrap: str, topic: str) -> int:
    """Messages in ``topic`` from its offsets (exact for an idempotent producer)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total += high - low
        return total
    finally:
        consumer.close()
