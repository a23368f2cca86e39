"""A single-node Apache Kafka broker in KRaft mode on loopback, for the local stack and tests.

The broker runs from the Maven jars (``tools/maven/kafka-broker``); storage is formatted once
per data folder, so a restart keeps topics and offsets.
"""

from __future__ import annotations

import base64
import logging
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cryptolake.common.kafka_client import jaas_config
from cryptolake.stack.jars import ToolingMissing, resolved_jars_dir
from cryptolake.stack.processes import Service, terminate

log = logging.getLogger(__name__)

READY_TOPIC = "_cryptolake.ready"
_PROBE_LOG = logging.getLogger(__name__ + ".probe")
_PROBE_LOG.setLevel(logging.CRITICAL)

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
"""


class BrokerFailed(RuntimeError):
    """The broker did not start or stop as asked; the message quotes its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SCRAM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class BrokerSecurity:
    """TLS and SCRAM on the client listener, ACLs enforced (for tests of secured clients; the
    local stack stays plaintext on loopback). ``admin`` is the super user the broker itself
    and the probe use; every other user is only what ACLs allow."""

    key_store: Path  # PEM: the server's private key and certificate chain
    ca_file: Path  # PEM: the CA the certificate chains to (the broker's own client trusts it)
    users: dict[str, str]  # SCRAM-SHA-512 user → password, ``admin`` among them
    admin: str = "admin"

    def client_config(self, user: str) -> dict[str, str]:
        """librdkafka's security properties for ``user``."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": SCRAM,
            "sasl.username": user,
            "sasl.password": self.users[user],
            "ssl.ca.location": str(self.ca_file),
        }


@dataclass(frozen=True)
class KafkaBrokerConfig:
    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"
    heap: str = "512m"
    num_partitions: int = 3
    # Topics are created by the producer with the partitions and retention it is told to use.
    auto_create_topics: bool = False
    security: BrokerSecurity | None = None


def _security_properties(config: KafkaBrokerConfig, security: BrokerSecurity) -> dict[str, str]:
    password = security.users[security.admin]
    return {
        "listeners": (
            f"SASL_SSL://{config.host}:{config.port},CONTROLLER://{config.host}:"
            f"{config.controller_port}"
        ),
        "advertised.listeners": f"SASL_SSL://{config.host}:{config.port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config": jaas_config(
            SCRAM, security.admin, password
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(security.key_store),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(security.ca_file),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # ANONYMOUS: the broker's own requests over the plaintext controller listener (loopback).
        "super.users": f"User:{security.admin};User:ANONYMOUS",
    }


def build_server_properties(config: KafkaBrokerConfig) -> str:
    """The KRaft combined broker+controller configuration for one node."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{config.host}:{config.controller_port}",
        "listeners": (
            f"PLAINTEXT://{config.host}:{config.port},CONTROLLER://{config.host}:"
            f"{config.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{config.host}:{config.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(config.data_dir / "log"),
        "num.partitions": str(config.num_partitions),
        "auto.create.topics.enable": str(config.auto_create_topics).lower(),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    if config.security is not None:
        props.update(_security_properties(config, config.security))
    return "".join(f"{key}={value}\n" for key, value in props.items())


class KafkaBroker(Service):
    """Start with ``start()`` (formats storage on first use, waits until produce works),
    stop with ``stop()``; also a context manager."""

    def __init__(self, config: KafkaBrokerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = config.data_dir / "broker.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise ToolingMissing("Java 17+ is not on PATH: run `make setup` (installs it)")
        return java

    def _prepare(self) -> tuple[Path, Path]:
        data = self.config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        properties = data / "server.properties"
        properties.write_text(build_server_properties(self.config))
        log4j = data / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log_file=self.log_file))
        return properties, log4j

    def _classpath(self) -> str:
        return str(resolved_jars_dir("kafka-broker") / "*")

    def _format_storage(self, properties: Path, log4j: Path) -> None:
        if (self.config.data_dir / "log" / "meta.properties").exists():
            return  # formatted before: keep topics and offsets
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        log.info("kafka: formatting storage in %s (cluster %s)", self.config.data_dir, cluster_id)
        result = subprocess.run(
            [
                self._java(),
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                self._classpath(),
                "kafka.tools.StorageTool",
                "format",
                # "=" form: a base64 id may start with "-", which would read as a flag.
                f"--cluster-id={cluster_id}",
                f"--config={properties}",
                # SCRAM users exist from the first start (KRaft stores them in its metadata).
                *(
                    f"--add-scram={SCRAM}=[name={user},password={password}]"
                    for user, password in (
                        self.config.security.users.items() if self.config.security else ()
                    )
                ),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerFailed(f"kafka storage format failed:\n{result.stdout}{result.stderr}")

    def start(self, timeout_s: float = 90.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        properties, log4j = self._prepare()
        self._format_storage(properties, log4j)
        heap = self.config.heap
        cmd = [
            self._java(),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(properties),
        ]
        log.info(
            "kafka: starting broker on %s (data %s)", self.bootstrap_servers, self.config.data_dir
        )
        stdout = (self.config.data_dir / "broker.stdout").open("ab")
        # Its own process group, so Ctrl-C in a terminal reaches the supervisor, not the JVM.
        self.process = subprocess.Popen(
            cmd, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True
        )
        stdout.close()
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerFailed(
                    f"kafka exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                # A plain TCP check first: Kafka clients log every refused connection.
                with socket.create_connection((self.config.host, self.config.port), timeout=1):
                    pass
                self._probe_produce()
            except (OSError, KafkaException) as exc:
                last_error = str(exc)
                time.sleep(0.5)
                continue
            log.info(
                "kafka: ready on %s after %.1f s",
                self.bootstrap_servers,
                time.monotonic() - started,
            )
            return
        self.stop()
        raise BrokerFailed(
            f"kafka not ready after {timeout_s:.0f} s ({last_error}):\n{self.log_tail()}"
        )

    def admin_config(self) -> dict[str, str]:
        """librdkafka properties of a client with every right (the super user when secured)."""
        security = self.config.security
        extra = security.client_config(security.admin) if security else {}
        return {"bootstrap.servers": self.bootstrap_servers, **extra}

    def _probe_produce(self) -> None:
        """Create the probe topic if needed and produce one acknowledged message to it."""
        conf: dict[str, str | int | float | bool] = {
            **self.admin_config(),
            "socket.timeout.ms": 2000,
        }
        # Until the broker is up these clients complain; the last error is reported instead.
        admin = AdminClient(conf, logger=_PROBE_LOG)
        futures = admin.create_topics([NewTopic(READY_TOPIC, 1, 1)], operation_timeout=5)
        for future in futures.values():
            try:
                future.result(timeout=5)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        producer = Producer({**conf, "acks": "all", "message.timeout.ms": 3000}, logger=_PROBE_LOG)
        errors: list[KafkaError] = []
        producer.produce(
            READY_TOPIC, b"ready", on_delivery=lambda err, _msg: errors.append(err) if err else None
        )
        if producer.flush(5) != 0:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "probe not acknowledged"))
        if errors:
            raise KafkaException(errors[0])

    def log_tail(self, lines: int = 30) -> str:
        texts = []
        for path in (self.log_file, self.config.data_dir / "broker.stdout"):
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM for a controlled shutdown, SIGKILL if it does not end in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        log.info("kafka: stopping broker on %s", self.bootstrap_servers)
        terminate(process, "kafka", timeout_s)


@dataclass(frozen=True)
class TopicRecord:
    key: bytes | None
    value: bytes
    partition: int
    offset: int


def read_topic(
    bootstrap_servers: str, topic: str, *, expected: int, timeout_s: float = 30.0
) -> list[TopicRecord]:
    """Every record of ``topic`` from the start, waiting until ``expected`` arrived (or the
    timeout: the caller asserts on what came). For tests and checks, not for pipelines."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    records: list[TopicRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        consumer.subscribe([topic])
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                records.append(
                    TopicRecord(
                        message.key(),
                        message.value() or b"",
                        message.partition() or 0,
                        message.offset() or 0,
                    )
                )
    finally:
        consumer.close()
    return records
