"""Kafka with TLS, SCRAM per client and ACLs, on a real broker: the producer and the Spark jobs
connect through the shared settings with their own credentials and a CA the operator's PKI
made, and do what the operator's ACLs allow and nothing more; plaintext, a wrong password and
a certificate from another CA are refused."""

import asyncio
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pyspark.sql import functions as F

from cryptolake.common.candles import reference_bars
from cryptolake.jobs import tables
from cryptolake.jobs.cli import start_streams
from cryptolake.jobs.settings import JobSettings
from cryptolake.jobs.topic import TopicGuard
from cryptolake.operator.kafka_auth import JOBS_USER, PRODUCER_USER, client_acls
from cryptolake.operator.pki import issue, make_ca
from cryptolake.operator.services import reconcile_acls
from cryptolake.producer.app import run_until
from cryptolake.producer.kafka_sink import ensure_topics
from cryptolake.producer.settings import ProducerSettings
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer
from cryptolake.stack.kafka import BrokerSecurity, KafkaBroker, KafkaBrokerConfig, free_port

pytestmark = pytest.mark.integration

TRADES = 300


def markets_of(trades: str) -> str:
    """The market-snapshot topic beside a test's trades topic."""
    return trades.replace(".trades", ".markets")


@dataclass(frozen=True)
class SecuredBroker:
    broker: KafkaBroker
    security: BrokerSecurity
    trades: str
    dlq: str
    other_ca: Path  # a CA that did not sign the broker's certificate

    def settings_of(self, user: str) -> dict[str, object]:
        """The shared Kafka settings of a client logging in as ``user``."""
        return {
            "bootstrap_servers": self.broker.bootstrap_servers,
            "trades_topic": self.trades,
            "dlq_topic": self.dlq,
            "markets_topic": markets_of(self.trades),
            "kafka_security_protocol": "SASL_SSL",
            "kafka_username": user,
            "kafka_password": self.security.users[user],
            "kafka_ca_file": self.security.ca_file,
        }


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> SecuredBroker:
    folder = tmp_path_factory.mktemp("kafka-tls")
    ca = make_ca("test pipeline CA")
    server = issue(ca, "kafka", ["127.0.0.1", "localhost"])
    key_store, ca_file, other_ca = folder / "server.pem", folder / "ca.pem", folder / "other.pem"
    key_store.write_text(server.key + server.certificate)
    ca_file.write_text(ca.certificate)
    other_ca.write_text(make_ca("someone else's CA").certificate)
    users = {name: secrets.token_hex(16) for name in ("admin", PRODUCER_USER, JOBS_USER)}
    security = BrokerSecurity(key_store=key_store, ca_file=ca_file, users=users)
    broker = KafkaBroker(KafkaBrokerConfig(
        data_dir=folder / "data", port=free_port(), controller_port=free_port(), heap="384m",
        num_partitions=1, security=security,
    ))  # fmt: skip
    broker.start()
    suffix = uuid.uuid4().hex[:8]
    trades, dlq = f"sec.{suffix}.trades", f"sec.{suffix}.dlq"
    # What the operator does on its pipelines' brokers.
    reconcile_acls(broker.bootstrap_servers, client_acls(trades, dlq, markets_of(trades)),
                   security.client_config(security.admin))  # fmt: skip
    yield SecuredBroker(broker, security, trades, dlq, other_ca)
    broker.stop()


def test_producer_and_jobs_move_trades_with_their_own_credentials(secured, spark, tmp_path):
    truth_path = tmp_path / "truth.jsonl"
    config = SimulatorConfig(seed=5, rate_per_s=2000, max_trades=TRADES, symbols=["BTC-USDT"],
                             ground_truth_path=truth_path)  # fmt: skip

    async def scenario() -> None:
        async with SimulatorServer(config) as sim:
            settings = ProducerSettings(
                source="simulator", simulator_url=sim.url("coinbase"),
                simulator_protocol="coinbase", symbols="BTC-USDT", metrics_port=0,
                **secured.settings_of(PRODUCER_USER),
            )  # fmt: skip
            ensure_topics(settings)  # the producer's own right to create its topics
            _, summary = await run_until(settings, lambda p: p.sink.delivered >= TRADES)
            assert summary.delivered == TRADES and summary.failed == 0

    asyncio.run(scenario())
    settings = JobSettings(table_root=str(tmp_path / "lake"), metrics_port=0,
                           **secured.settings_of(JOBS_USER))  # fmt: skip
    for query in start_streams(spark, settings, "all", available_now=True):
        query.awaitTermination()
    truth = [json.loads(line) for line in truth_path.read_text().splitlines()]
    silver = spark.read.format("delta").load(settings.table_path(tables.SILVER_TRADES))
    assert silver.count() == TRADES
    candles = spark.read.format("delta").load(settings.table_path(tables.GOLD_CANDLES_1M))
    epoch_minute = (F.col("minute").cast("long") / 60).cast("long").alias("epoch_minute")
    served = {(r.symbol, r.epoch_minute): r for r in candles.select("*", epoch_minute).collect()}
    expected = reference_bars(truth)
    assert set(served) == set(expected)
    for key, bar in expected.items():
        assert (served[key].volume, served[key].quote_volume, served[key].trades) == (
            bar["volume"], bar["quote_volume"], bar["trades"])  # fmt: skip


def _error_of(action) -> KafkaError:
    with pytest.raises(KafkaException) as caught:
        action()
    return caught.value.args[0]


def _client(secured: SecuredBroker, **overrides: str) -> dict[str, str]:
    return {"bootstrap.servers": secured.broker.bootstrap_servers,
            **secured.security.client_config(JOBS_USER), **overrides}  # fmt: skip


def _consume_one(conf: dict[str, str], topic: str) -> None:
    consumer = Consumer({**conf, "group.id": "spark-kafka-source-test",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.subscribe([topic])
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is not None and message.error():
                raise KafkaException(message.error())
            if message is not None:
                return
        raise AssertionError("nothing to read, and no error")
    finally:
        consumer.close()


def test_each_client_may_only_do_what_its_acls_allow(secured):
    producer_conf = _client(secured, **secured.security.client_config(PRODUCER_USER))
    jobs_conf = _client(secured)
    # The producer writes (the first test filled the topic), the jobs read.
    _consume_one(jobs_conf, secured.trades)
    denied = _error_of(lambda: _consume_one(producer_conf, secured.trades))
    assert denied.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                             KafkaError.GROUP_AUTHORIZATION_FAILED), denied  # fmt: skip
    producer = Producer({**jobs_conf, "message.timeout.ms": 10_000})
    failures: list[KafkaError] = []
    producer.produce(secured.trades, b"{}", on_delivery=lambda err, _: failures.append(err))
    producer.flush(15)
    assert [e.code() for e in failures] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # Neither may touch a topic that is not its own.
    admin = AdminClient(jobs_conf)
    listed = admin.list_topics(timeout=15).topics
    assert set(listed) == {secured.trades}  # what it may describe, nothing else


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"sasl.password": "wrong"}, "Authentication failed"),
        ({"ssl.ca.location": "OTHER"}, "certificate verify failed"),
        ({"security.protocol": "PLAINTEXT"}, ""),
    ],
    ids=["wrong-password", "other-ca", "plaintext"],
)
def test_a_client_without_the_right_credentials_or_ca_is_refused(secured, overrides, reason):
    if overrides.get("ssl.ca.location") == "OTHER":
        overrides = {"ssl.ca.location": str(secured.other_ca)}
    errors: list[KafkaError] = []
    admin = AdminClient({**_client(secured, **overrides), "error_cb": errors.append,
                         "socket.timeout.ms": 3000})  # fmt: skip
    error = _error_of(lambda: admin.list_topics(timeout=6))
    admin.poll(3)  # serves error_cb: the client's own account of why
    assert error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                            KafkaError._AUTHENTICATION, KafkaError._SSL), error  # fmt: skip
    assert reason in " ".join(e.str() for e in errors), errors


def _grant_later(secured: SecuredBroker, trades: str, dlq: str, delay_s: float) -> threading.Timer:
    """What the operator does once the broker answers: the clients' ACLs, a little later."""
    admin = secured.security.client_config(secured.security.admin)
    timer = threading.Timer(
        delay_s,
        reconcile_acls,
        (secured.broker.bootstrap_servers, client_acls(trades, dlq, markets_of(trades)), admin),
    )
    timer.start()
    return timer


def test_clients_started_before_their_acls_wait_for_them_instead_of_failing(
    secured, spark, tmp_path
):
    """A fresh pipeline's producer and drivers start while the operator has not granted their
    ACLs yet: each waits (before: the producer exited on TOPIC_AUTHORIZATION_FAILED and the
    drivers on TopicAuthorizationException, restarting until the ACLs came)."""
    suffix = uuid.uuid4().hex[:8]
    trades, dlq = f"late-acl.{suffix}.trades", f"late-acl.{suffix}.dlq"
    producer = ProducerSettings(**{**secured.settings_of(PRODUCER_USER), "trades_topic": trades,
                                   "dlq_topic": dlq, "markets_topic": markets_of(trades)},
                                metrics_port=0)  # fmt: skip
    timer = _grant_later(secured, trades, dlq, delay_s=3.0)
    started = time.monotonic()
    ensure_topics(producer)  # creates both topics once allowed
    waited = time.monotonic() - started
    timer.join()
    assert 3.0 <= waited < 30, waited

    # The jobs' login may not describe the new topic until its ACLs are granted again.
    other, other_dlq = f"late-acl.{suffix}.b.trades", f"late-acl.{suffix}.b.dlq"
    admin = AdminClient(secured.security.client_config(secured.security.admin)
                        | {"bootstrap.servers": secured.broker.bootstrap_servers})  # fmt: skip
    for future in admin.create_topics([NewTopic(other, 1, 1)]).values():
        future.result(timeout=30)
    jobs = JobSettings(**{**secured.settings_of(JOBS_USER), "trades_topic": other},
                       table_root=str(tmp_path / "lake"), metrics_port=0)  # fmt: skip
    guard = TopicGuard(spark, jobs, "refine")
    timer = _grant_later(secured, other, other_dlq, delay_s=3.0)
    started = time.monotonic()
    assert guard.on_start(reset=[]) is False
    waited = time.monotonic() - started
    timer.join()
    assert 3.0 <= waited < 30, waited
    assert guard.recorded is not None  # the topic's id, read once allowed
