#!/usr/bin/python3
"""``/etc/kafka/docker/run`` of the ``localhost/cryptolake/kafka`` image: what the apache/kafka
image's run script does, for the broker jars `make setup` resolves (``tools/maven/kafka-broker``).

The operator starts it as ``export KAFKA_NODE_ID=${HOSTNAME##*-}; exec /etc/kafka/docker/run``
with the configuration in ``KAFKA_*`` variables. As in apache/kafka (docker/resources/utility,
``render-properties``): every ``KAFKA_X`` but the JVM and logging ones becomes property ``x``,
where ``_`` → ``.``, ``__`` → ``_`` and ``___`` → ``-``; with no ``KAFKA_*`` configuration at all,
a single-node default applies. ``CLUSTER_ID`` formats the storage on first start (a formatted
one is kept; ``SCRAM_USERS`` adds SCRAM users then), then the broker replaces this process,
logging to standard output.

Standard library only: the image runs it with Debian's python3; the functions above ``main``
are pure, for the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

KAFKA_HOME = Path(os.environ.get("KAFKA_HOME", "/opt/kafka"))
CONFIG_DIR = KAFKA_HOME / "config"
LIBS_DIR = KAFKA_HOME / "libs"
DATA_DIR = "/var/lib/kafka/data"
# apache/kafka's configureDefaults (4.x): only the cluster id has a default.
DEFAULT_CLUSTER_ID = "5L6g3nShT-eMCtK--X86sw"

# Variables that configure the JVM, logging or the image, not the broker
# (apache/kafka's kafka-propertiesSpec.json excludes, plus the ones of kafka-run-class.sh).
EXCLUDED = frozenset(
    {
        "KAFKA_VERSION",
        "KAFKA_HOME",
        "KAFKA_HEAP_OPTS",
        "KAFKA_LOG4J_OPTS",
        "KAFKA_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_GC_LOG_OPTS",
        "KAFKA_LOG4J_ROOT_LOGLEVEL",
        "KAFKA_LOG4J_LOGGERS",
        "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    }
)

# The image's server.properties when no KAFKA_* configuration is given (apache/kafka's
# docker/server.properties: one combined broker and controller), with the image's data dir.
SINGLE_NODE_DEFAULTS: dict[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.quorum.voters": "1@localhost:9093",
    "listeners": "PLAINTEXT://:9092,CONTROLLER://:9093",
    "advertised.listeners": "PLAINTEXT://localhost:9092",
    "inter.broker.listener.name": "PLAINTEXT",
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "log.dirs": DATA_DIR,
    "num.partitions": "1",
    "offsets.topic.replication.factor": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
}

# kafka-server-start.sh and kafka-run-class.sh defaults.
DEFAULT_HEAP_OPTS = "-Xmx1G -Xms1G"
DEFAULT_JVM_PERFORMANCE_OPTS = (
    "-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 "
    "-XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true"
)

_SINGLE_UNDERSCORE = re.compile(r"[^_]_[^_]")


def env_key_to_property(key: str) -> str:
    """``OFFSETS_TOPIC_REPLICATION_FACTOR`` → ``offsets.topic.replication.factor``: a single
    ``_`` is a dot, ``__`` an underscore, ``___`` a dash (apache/kafka's ConvertKey, including
    its left-to-right, non-overlapping matching of single underscores)."""
    dotted = _SINGLE_UNDERSCORE.sub(lambda match: match.group(0).replace("_", "."), key)
    return dotted.replace("___", "-").replace("__", "_").lower()


def server_properties(env: Mapping[str, str]) -> dict[str, str]:
    """The broker's properties from an environment: each ``KAFKA_*`` variable that is not in
    EXCLUDED, or the single-node defaults when there is none."""
    props = {
        env_key_to_property(name.removeprefix("KAFKA_")): value
        for name, value in env.items()
        if name.startswith("KAFKA_") and name not in EXCLUDED
    }
    return props or dict(SINGLE_NODE_DEFAULTS)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def render_properties(props: Mapping[str, str]) -> str:
    """A Java properties file, sorted by key (as apache/kafka writes it)."""
    return "".join(f"{_escape(key)}={_escape(props[key])}\n" for key in sorted(props))


def log4j2_properties(env: Mapping[str, str], *, tools: bool = False) -> str:
    """Console logging, as the image's log4j2 config: INFO for the broker, WARN for tools;
    ``KAFKA_LOG4J_ROOT_LOGLEVEL`` / ``KAFKA_TOOLS_LOG4J_LOGLEVEL`` and ``KAFKA_LOG4J_LOGGERS``
    (``logger=LEVEL,…``) override."""
    if tools:
        level = env.get("KAFKA_TOOLS_LOG4J_LOGLEVEL", "WARN")
        target = "SYSTEM_ERR"
    else:
        level = env.get("KAFKA_LOG4J_ROOT_LOGLEVEL", "INFO")
        target = "SYSTEM_OUT"
    lines = [
        "status = warn",
        "appender.console.type = Console",
        "appender.console.name = STDOUT",
        f"appender.console.target = {target}",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d] %p %m (%c)%n",
        f"rootLogger.level = {level}",
        "rootLogger.appenderRef.console.ref = STDOUT",
    ]
    if not tools:
        for index, item in enumerate(filter(None, env.get("KAFKA_LOG4J_LOGGERS", "").split(","))):
            logger, _, logger_level = item.partition("=")
            lines += [
                f"logger.l{index}.name = {logger.strip()}",
                f"logger.l{index}.level = {logger_level.strip() or 'INFO'}",
            ]
    return "\n".join(lines) + "\n"


def java_binary(env: Mapping[str, str]) -> str:
    home = env.get("JAVA_HOME")
    return f"{home}/bin/java" if home else "java"


def scram_arguments(env: Mapping[str, str]) -> list[str]:
    """``--add-scram`` for each ``user=password`` of ``SCRAM_USERS`` (space-separated): KRaft
    keeps SCRAM users in its metadata, stored when the storage is first formatted."""
    arguments = []
    for item in env.get("SCRAM_USERS", "").split():
        user, _, password = item.partition("=")
        arguments.append(f"--add-scram=SCRAM-SHA-512=[name={user},password={password}]")
    return arguments


def format_command(
    env: Mapping[str, str], cluster_id: str, properties: Path, log4j: Path
) -> list[str]:
    """kafka-storage.sh format, keeping storage that is already formatted."""
    return [
        java_binary(env),
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{LIBS_DIR}/*",
        "kafka.tools.StorageTool",
        "format",
        # "=" form: a base64 id may start with "-", which would read as a flag.
        f"--cluster-id={cluster_id}",
        f"--config={properties}",
        "--ignore-formatted",
        *scram_arguments(env),
    ]


def broker_command(env: Mapping[str, str], properties: Path, log4j: Path) -> list[str]:
    """kafka-server-start.sh: the JVM options of kafka-run-class.sh, then kafka.Kafka."""
    options = [
        *env.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS).split(),
        *env.get("KAFKA_JVM_PERFORMANCE_OPTS", DEFAULT_JVM_PERFORMANCE_OPTS).split(),
        *env.get("KAFKA_GC_LOG_OPTS", "").split(),
        *env.get("KAFKA_JMX_OPTS", "").split(),
        *env.get("KAFKA_LOG4J_OPTS", f"-Dlog4j2.configurationFile={log4j}").split(),
        *env.get("KAFKA_OPTS", "").split(),
    ]
    return [java_binary(env), *options, "-cp", f"{LIBS_DIR}/*", "kafka.Kafka", str(properties)]


def main() -> None:
    env = dict(os.environ)
    if not env.get("CLUSTER_ID"):
        print(f'CLUSTER_ID not set. Setting it to default value: "{DEFAULT_CLUSTER_ID}"')
        env["CLUSTER_ID"] = DEFAULT_CLUSTER_ID
    print(f"===> User: uid={os.getuid()} gid={os.getgid()}", flush=True)
    print("===> Configuring ...", flush=True)
    props = server_properties(env)
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    properties = CONFIG_DIR / "server.properties"
    properties.write_text(render_properties(props))
    log4j = CONFIG_DIR / "log4j2.properties"
    log4j.write_text(log4j2_properties(env))
    tools_log4j = CONFIG_DIR / "tools-log4j2.properties"
    tools_log4j.write_text(log4j2_properties(env, tools=True))
    for log_dir in props.get("log.dirs", props.get("log.dir", "")).split(","):
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
    if shutil.which(java_binary(env)) is None:
        sys.exit(f"{java_binary(env)} not found: the image needs a Java 17+ runtime")
    print(f"===> Using provided cluster id {env['CLUSTER_ID']} ...", flush=True)
    formatted = subprocess.run(
        format_command(env, env["CLUSTER_ID"], properties, tools_log4j),
        capture_output=True,
        text=True,
        check=False,
    )
    if formatted.returncode != 0:
        sys.exit(f"kafka storage format failed:\n{formatted.stdout}{formatted.stderr}")
    print("===> Launching ... ", flush=True)
    command = broker_command(env, properties, log4j)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
