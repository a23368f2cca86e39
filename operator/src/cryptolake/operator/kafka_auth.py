"""Who may do what on a pipeline's broker: one SCRAM user per client and the ACLs that let each
do its job and no more (Kafka's StandardAuthorizer denies whatever no ACL allows). Pure data;
the broker's admin applies it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

ADMIN_USER: Final = "admin"  # the super user: the brokers between themselves, the operator
PRODUCER_USER: Final = "producer"
JOBS_USER: Final = "jobs"
# The group ids Spark's Kafka source makes up (spark-kafka-source-<uuid>-…).
SPARK_GROUP_PREFIX: Final = "spark-kafka-source"

Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"]


@dataclass(frozen=True)
class Acl:
    """ALLOW ``operation`` on the ``resource`` named ``name`` (or every name starting with it,
    when ``prefixed``) to ``User:<user>`` from any host."""

    user: str
    resource: Literal["TOPIC", "GROUP"]
    name: str
    operation: Operation
    prefixed: bool = False

    @property
    def principal(self) -> str:
        return f"User:{self.user}"


def client_acls(trades_topic: str, dlq_topic: str, markets_topic: str) -> list[Acl]:
    """The producer creates and writes the trades, dead-letter and market-snapshot topics; the
    jobs read the trades topic (Spark's source: describe, read, its own consumer groups).
    Nobody else reads trades, and the jobs cannot write them."""
    acls = [
        Acl(PRODUCER_USER, "TOPIC", topic, operation)
        for topic in (trades_topic, dlq_topic, markets_topic)
        for operation in ("CREATE", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS")
    ]
    acls += [Acl(JOBS_USER, "TOPIC", trades_topic, op) for op in ("READ", "DESCRIBE")]
    acls.append(Acl(JOBS_USER, "GROUP", SPARK_GROUP_PREFIX, "READ", prefixed=True))
    return acls
