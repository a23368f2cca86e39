"""The local stack behind ``make run``: services as child processes in the foreground, their
output prefixed with their name, stopped in reverse order on Ctrl-C or SIGTERM.

State (broker data, later checkpoints and tables) lives under ``CRYPTOLAKE_STATE_DIR``
(default ``.local/``), so a restart resumes where the last run stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from pydantic import Field

from cryptolake.common.settings import ServiceSettings
from cryptolake.stack.kafka import KafkaBroker, KafkaBrokerConfig
from cryptolake.stack.processes import terminate

log = logging.getLogger(__name__)


class StackSettings(ServiceSettings):
    """Env: CRYPTOLAKE_STATE_DIR, CRYPTOLAKE_KAFKA_PORT, CRYPTOLAKE_SOURCE…"""

    state_dir: Path = Path(".local")
    """Local stack state: broker data, lakehouse/ (tables and checkpoints)."""
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    """The local broker's port."""
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    """The local broker's KRaft controller port."""
    kafka_heap: str = "512m"
    """The local broker's JVM heap."""
    source: Literal["auto", "live", "simulator"] = "auto"
    """auto, live or simulator (make run SOURCE=…)."""
    run_jobs: bool = True
    """The Spark jobs (Bronze/Silver/Gold in one local application); false: broker + producer."""
    run_api: bool = True
    """The query API and dashboard over the tables the jobs write."""
    api_port: int = Field(default=8000, ge=1, le=65535)
    """The API and dashboard port."""
    alerts_file: Path | None = None
    """Alert rules (YAML, alerts/README.md): set, the alerts worker runs beside the jobs."""
    stop_timeout_s: float = Field(default=45.0, gt=0)
    """At Ctrl-C, how long each service may take to stop before it is killed."""


@dataclass
class ServiceSpec:
    """One child process of the stack."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunningService:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    pump: threading.Thread


def build_services(settings: StackSettings, bootstrap_servers: str) -> list[ServiceSpec]:
    """What runs on top of the broker, in start order (stopped in reverse)."""
    python = sys.executable
    table_root = str(settings.state_dir.resolve() / "lakehouse")
    services = [
        ServiceSpec(
            name="producer",
            argv=[python, "-m", "cryptolake.producer.cli"],
            env={
                "CRYPTOLAKE_BOOTSTRAP_SERVERS": bootstrap_servers,
                "CRYPTOLAKE_SOURCE": settings.source,
                # Gold's closed candles against the exchanges' klines, once a minute (with the
                # jobs: they write the candles).
                "CRYPTOLAKE_TABLE_ROOT": table_root,
                "CRYPTOLAKE_RECONCILE_INTERVAL_S": "60" if settings.run_jobs else "0",
            },
        ),
    ]
    if settings.run_jobs:
        services.append(
            ServiceSpec(
                name="jobs",
                argv=[python, "-m", "cryptolake.jobs", "all"],
                env={
                    "CRYPTOLAKE_BOOTSTRAP_SERVERS": bootstrap_servers,
                    "CRYPTOLAKE_TABLE_ROOT": table_root,
                },
            )
        )
    if settings.run_jobs and settings.alerts_file is not None:
        services.append(
            ServiceSpec(
                name="alerts",
                argv=[python, "-m", "cryptolake.alerts"],
                env={
                    "CRYPTOLAKE_TABLE_ROOT": table_root,
                    "CRYPTOLAKE_ALERTS_FILE": str(settings.alerts_file.resolve()),
                },
            )
        )
    if settings.run_api:
        services.append(
            ServiceSpec(
                name="api",
                argv=[python, "-m", "cryptolake.api", "--port", str(settings.api_port)],
                env={"CRYPTOLAKE_TABLE_ROOT": table_root},
            )
        )
    return services


def _pump(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        sys.stdout.write(f"{name:>9} | {raw.decode(errors='replace')}")
        sys.stdout.flush()


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        state = settings.state_dir.resolve()
        self.broker = KafkaBroker(
            KafkaBrokerConfig(
                data_dir=state / "kafka",
                port=settings.kafka_port,
                controller_port=settings.kafka_controller_port,
                heap=settings.kafka_heap,
            )
        )
        self.services: list[RunningService] = []
        self._stopping = threading.Event()

    def start(self) -> None:
        self.broker.start()
        for spec in build_services(self.settings, self.broker.bootstrap_servers):
            self._spawn(spec)

    def _spawn(self, spec: ServiceSpec) -> None:
        log.info("starting %s", spec.name)
        # A session of its own: Ctrl-C reaches only us, and we stop children in order.
        process = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert process.stdout is not None
        pump = threading.Thread(target=_pump, args=(spec.name, process.stdout), daemon=True)
        pump.start()
        self.services.append(RunningService(spec, process, pump))

    def wait(self) -> int:
        """Block until a stop signal (0) or until a service dies on its own (1)."""
        while not self._stopping.is_set():
            for service in self.services:
                code = service.process.poll()
                if code is not None:
                    log.error(
                        "%s exited on its own with code %d; stopping the stack",
                        service.spec.name,
                        code,
                    )
                    return 1
            self._stopping.wait(0.5)
        return 0

    def request_stop(self, signum: int, _frame: object) -> None:
        if self._stopping.is_set():
            log.info("%s again: giving each service 5 s", signal.Signals(signum).name)
            self.settings = self.settings.model_copy(update={"stop_timeout_s": 5.0})
        else:
            log.info("%s: stopping the stack (Ctrl-C again to hurry)", signal.Signals(signum).name)
        self._stopping.set()

    def stop(self) -> None:
        for service in reversed(self.services):
            process = service.process
            if process.poll() is None:
                log.info("stopping %s", service.spec.name)
                terminate(process, service.spec.name, self.settings.stop_timeout_s)
            service.pump.join(timeout=2)
            log.info("%s stopped (exit code %s)", service.spec.name, process.returncode)
        self.broker.stop()


def run_stack(settings: StackSettings) -> int:
    stack = Stack(settings)
    signal.signal(signal.SIGINT, stack.request_stop)
    signal.signal(signal.SIGTERM, stack.request_stop)
    started = time.monotonic()
    try:
        stack.start()
        log.info(
            "local stack up in %.1f s: Kafka on %s; state in %s. Ctrl-C stops it.",
            time.monotonic() - started,
            stack.broker.bootstrap_servers,
            settings.state_dir.resolve(),
        )
        if settings.run_api:
            log.info("dashboard: http://127.0.0.1:%d/  (API docs: /docs)", settings.api_port)
        return stack.wait()
    finally:
        stack.stop()
