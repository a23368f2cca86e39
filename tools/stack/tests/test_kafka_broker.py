import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cryptolake.stack.kafka import (
    KafkaBroker,
    KafkaBrokerConfig,
    build_server_properties,
    free_port,
)


def test_server_properties_bind_loopback_and_disable_auto_create(tmp_path):
    text = build_server_properties(
        KafkaBrokerConfig(data_dir=tmp_path, port=19092, controller_port=19093)
    )
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093\n" in text
    assert "auto.create.topics.enable=false\n" in text
    assert f"log.dirs={tmp_path / 'log'}\n" in text


def test_session_broker_accepts_produce_and_consume(kafka_broker):
    topic = f"test.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "acks": "all"})
    for index in range(10):
        producer.produce(topic, value=str(index).encode())
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap_servers,
            "group.id": topic,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values = []
    for _ in range(60):
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value().decode())
        if len(values) == 10:
            break
    consumer.close()
    assert values == [str(index) for index in range(10)]


def test_restart_keeps_topics_and_stops_cleanly(tmp_path):
    config = KafkaBrokerConfig(
        data_dir=tmp_path, port=free_port(), controller_port=free_port(), heap="256m"
    )
    with KafkaBroker(config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        admin.create_topics([NewTopic("kept", 2, 1)])["kept"].result(timeout=30)
        process = broker.process
    assert process is not None and process.returncode is not None
    with KafkaBroker(config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        assert "kept" in admin.list_topics(timeout=10).topics
