"""Shared pytest fixtures for every member's tests: real services from cryptolake.stack
(Kafka, MinIO) and one local SparkSession per test session."""

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["cryptolake.stack.pytest_plugin"]


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Local Spark with the Delta, Kafka and S3A jars; 2 shuffle partitions; no UI."""
    from cryptolake.jobs.session import build_session  # noqa: PLC0415 (only Spark tests pay)
    from cryptolake.jobs.settings import JobSettings  # noqa: PLC0415

    settings = JobSettings(
        table_root=str(tmp_path_factory.mktemp("lake")),
        spark_master="local[2]",
        shuffle_partitions=2,
        driver_memory="1g",
    )
    session = build_session(settings, "cryptolake-tests")
    yield session
    session.stop()


@pytest.fixture
def job_lake(spark: object, tmp_path: Path) -> object:
    """``job_lake(job, query_id)``: settings on a local table root holding the tables ``job``
    creates, and its checkpoint naming ``query_id`` (what a started query writes first)."""
    import json  # noqa: PLC0415

    from cryptolake.jobs.settings import JobSettings  # noqa: PLC0415
    from cryptolake.jobs.streams import ensure_tables  # noqa: PLC0415

    settings = JobSettings(table_root=str(tmp_path / "lake"), metrics_port=0)

    def make(job: str, query_id: str = "test-query") -> JobSettings:
        ensure_tables(spark, settings, job)
        checkpoint = tmp_path / "lake" / "_checkpoints" / job
        checkpoint.mkdir(parents=True, exist_ok=True)
        (checkpoint / "metadata").write_text(json.dumps({"id": query_id}))
        return settings

    return make
