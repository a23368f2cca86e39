"""Kafka client properties from the shared settings, for each client library the project uses:
librdkafka (confluent-kafka: the producer, tests) and Kafka's Java client (Spark's Kafka source
and the jobs' admin client). One place decides how a client connects and authenticates."""

from __future__ import annotations

from cryptolake.common.settings import KafkaTopicsSettings

_JAAS_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def jaas_config(mechanism: str, username: str, password: str) -> str:
    """The Java client's ``sasl.jaas.config`` for a user (clients, and a broker's own login)."""
    return f'{_JAAS_MODULES[mechanism]} required username="{username}" password="{password}";'


def librdkafka_config(settings: KafkaTopicsSettings) -> dict[str, str]:
    """``bootstrap.servers`` and the security properties, as librdkafka names them."""
    protocol = settings.kafka_security_protocol
    config = {"bootstrap.servers": settings.bootstrap_servers, "security.protocol": protocol}
    if protocol.startswith("SASL_"):
        assert settings.kafka_username and settings.kafka_password  # the settings' validator
        config["sasl.mechanisms"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_username
        config["sasl.password"] = settings.kafka_password.get_secret_value()
    if protocol.endswith("SSL") and settings.kafka_ca_file is not None:
        config["ssl.ca.location"] = str(settings.kafka_ca_file)
    return config


def java_kafka_config(settings: KafkaTopicsSettings) -> dict[str, str]:
    """The same, as Kafka's Java client names them (Spark's source takes each with a
    ``kafka.`` prefix)."""
    protocol = settings.kafka_security_protocol
    config = {"bootstrap.servers": settings.bootstrap_servers, "security.protocol": protocol}
    if protocol.startswith("SASL_"):
        assert settings.kafka_username and settings.kafka_password  # the settings' validator
        mechanism = settings.kafka_sasl_mechanism
        config["sasl.mechanism"] = mechanism
        config["sasl.jaas.config"] = jaas_config(
            mechanism, settings.kafka_username, settings.kafka_password.get_secret_value()
        )
    if protocol.endswith("SSL") and settings.kafka_ca_file is not None:
        # PEM trust stores need no keytool step (Kafka 2.7+).
        config["ssl.truststore.type"] = "PEM"
        config["ssl.truststore.location"] = str(settings.kafka_ca_file)
    return config
