"""What the operator does inside the pipeline's services once they answer: the topics (through
the Kafka admin API) and the bucket (S3). Both are idempotent; an unreachable service raises
``ServiceUnreachable``, which the status reports as Degraded until it answers again."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from cryptolake.common.market_snapshot import MARKETS_TOPIC
from cryptolake.common.s3 import REGION
from cryptolake.common.trade import DLQ_TOPIC, TOPIC_CONFIG, TRADES_TOPIC
from cryptolake.operator.kafka_auth import Acl

log = logging.getLogger(__name__)
# The trades, dead-letter and market-snapshot topics, in client_acls' order.
TOPICS: Final = (TRADES_TOPIC, DLQ_TOPIC, MARKETS_TOPIC)


class ServiceUnreachable(Exception):
    """The broker or S3 did not answer (or refused); the message says which and why."""


@dataclass(frozen=True)
class TopicSpec:
    partitions: int
    replication: int
    retention_ms: int


def build_topic_config(wanted: TopicSpec) -> dict[str, str]:
    """Every topic's settings: retention from the spec, plus the contract's ``TOPIC_CONFIG``
    (the broker's append time as each record's timestamp, which silver judges event times by)."""
    return {"retention.ms": str(wanted.retention_ms), **TOPIC_CONFIG}


def build_config_alterations(wanted: TopicSpec) -> list[ConfigResource]:
    """The incremental alters that set :func:`build_topic_config` on every topic (existing
    topics too; settings not named are left alone)."""
    entries = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in build_topic_config(wanted).items()
    ]
    return [
        ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
        for topic in TOPICS
    ]


def _admin(bootstrap: str, client: Mapping[str, str] | None) -> AdminClient:
    """An admin client; ``client`` adds librdkafka's security properties (a TLS broker)."""
    return AdminClient(
        {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 3000,
         **(client or {})},
        # librdkafka's connection errors through logging, not raw lines on stderr.
        logger=logging.getLogger("cryptolake.operator.librdkafka"),
    )  # fmt: skip


def reconcile_acls(
    bootstrap: str, acls: list[Acl], client: Mapping[str, str], timeout_s: float = 5.0
) -> None:
    """Create every ACL (creating one that exists changes nothing)."""
    bindings = [
        AclBinding(
            ResourceType[acl.resource], acl.name,
            ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL,
            acl.principal, "*", AclOperation[acl.operation], AclPermissionType.ALLOW,
        )
        for acl in acls
    ]  # fmt: skip
    admin = _admin(bootstrap, client)  # held: the futures fail once the client is collected
    try:
        for future in admin.create_acls(bindings).values():
            _result(future, timeout_s)
    except KafkaException as error:
        raise ServiceUnreachable(f"broker {bootstrap}: ACLs: {error.args[0].str()}") from error


def reconcile_topics(
    bootstrap: str,
    wanted: TopicSpec,
    timeout_s: float = 5.0,
    *,
    client: Mapping[str, str] | None = None,
) -> list[str]:
    """Create missing topics, add partitions up to the spec (Kafka never removes them), set
    retention and ``TOPIC_CONFIG``. Returns what it changed."""
    admin = _admin(bootstrap, client)
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
        changes = []
        missing = [t for t in TOPICS if t not in existing]
        if missing:
            config = build_topic_config(wanted)
            new = [
                NewTopic(t, wanted.partitions, wanted.replication, config=config) for t in missing
            ]
            for topic, future in admin.create_topics(new, request_timeout=timeout_s).items():
                _result(future, timeout_s, tolerate=KafkaError.TOPIC_ALREADY_EXISTS)
                changes.append(f"created {topic}")
        grow = [
            NewPartitions(t, wanted.partitions)
            for t in TOPICS
            if t in existing and len(existing[t].partitions) < wanted.partitions
        ]
        if grow:
            for topic, future in admin.create_partitions(grow, request_timeout=timeout_s).items():
                _result(future, timeout_s)
                changes.append(f"{topic}: {wanted.partitions} partitions")
        alterations = build_config_alterations(wanted)
        for future in admin.incremental_alter_configs(alterations).values():
            _result(future, timeout_s)
    except KafkaException as error:
        raise ServiceUnreachable(f"broker {bootstrap}: {error.args[0].str()}") from error
    for change in changes:
        log.info("topics on %s: %s", bootstrap, change)
    return changes


def _result(future: object, timeout_s: float, tolerate: int | None = None) -> None:
    try:
        future.result(timeout=timeout_s)  # type: ignore[attr-defined]
    except KafkaException as error:
        if tolerate is None or error.args[0].code() != tolerate:
            raise


def _s3(endpoint: str, access_key: str, secret_key: str, ca_file: str | None = None) -> Any:
    """``ca_file``: trust this CA (a TLS MinIO of the pipeline) instead of the system's."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        verify=ca_file,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=5,
            retries={"max_attempts": 1},
        ),
    )


def ensure_bucket(
    endpoint: str, access_key: str, secret_key: str, bucket: str, *, ca_file: str | None = None
) -> bool:
    """Create the bucket unless it exists; True when created."""
    s3 = _s3(endpoint, access_key, secret_key, ca_file)
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise ServiceUnreachable(f"S3 {endpoint}: {code}: {error}") from error
    except BotoCoreError as error:
        raise ServiceUnreachable(f"S3 {endpoint}: {error}") from error
    log.info("created bucket %s on %s", bucket, endpoint)
    return True


def delete_prefix(endpoint: str, access_key: str, secret_key: str, bucket: str, prefix: str) -> int:
    """retainPolicy Delete on external S3: every object (all versions) under ``prefix/`` and
    nothing else of the bucket. Returns the objects deleted; a bucket gone is not an error."""
    s3 = _s3(endpoint, access_key, secret_key)
    deleted = 0
    try:
        pages = s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix.rstrip("/") + "/"
        )
        for page in pages:
            keys = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return deleted
        raise ServiceUnreachable(f"S3 {endpoint}: {error}") from error
    except BotoCoreError as error:
        raise ServiceUnreachable(f"S3 {endpoint}: {error}") from error
    log.info("deleted %s/%s/ on %s (%d objects)", bucket, prefix, endpoint, deleted)
    return deleted
