"""Kafka client settings → each library's properties, and what the settings refuse."""

import pytest
from pydantic import ValidationError

from cryptolake.common.kafka_client import java_kafka_config, librdkafka_config
from cryptolake.common.settings import KafkaTopicsSettings


def test_plaintext_adds_nothing_but_the_protocol() -> None:
    settings = KafkaTopicsSettings(bootstrap_servers="b:9092")
    assert librdkafka_config(settings) == {"bootstrap.servers": "b:9092",
                                           "security.protocol": "PLAINTEXT"}  # fmt: skip
    assert java_kafka_config(settings) == librdkafka_config(settings)


def test_sasl_ssl_gives_each_library_its_own_names() -> None:
    settings = KafkaTopicsSettings(
        bootstrap_servers="b:9093", kafka_security_protocol="SASL_SSL", kafka_username="jobs",
        kafka_password="s3cret", kafka_ca_file="/ca.crt",
    )  # fmt: skip
    rd = librdkafka_config(settings)
    assert (rd["sasl.mechanisms"], rd["sasl.username"], rd["sasl.password"],
            rd["ssl.ca.location"]) == ("SCRAM-SHA-512", "jobs", "s3cret", "/ca.crt")  # fmt: skip
    java = java_kafka_config(settings)
    assert java["sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="jobs" '
        'password="s3cret";'
    )
    assert (java["ssl.truststore.type"], java["ssl.truststore.location"]) == ("PEM", "/ca.crt")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, "needs CRYPTOLAKE_KAFKA_USERNAME"),
        ({"kafka_username": "jobs"}, "needs CRYPTOLAKE_KAFKA_USERNAME"),
        # Either would end the JAAS config's quoted value early: another login module option.
        ({"kafka_username": "jobs", "kafka_password": 'x" admin="true'}, "double quote"),
        ({"kafka_username": "jo\\bs", "kafka_password": "x"}, "backslash"),
        ({"kafka_username": "jobs", "kafka_password": "x", "kafka_security_protocol": "TLS"},
         "kafka_security_protocol"),
    ],
)  # fmt: skip
def test_sasl_without_usable_credentials_is_refused(changes: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        KafkaTopicsSettings(**{"kafka_security_protocol": "SASL_SSL", **changes})
