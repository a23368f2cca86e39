"""Shared pytest fixtures for every member's tests: real services from cryptolake.stack
(Kafka, MinIO) and one local SparkSession per test session."""

from collections.abc import Iterator

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
