"""``make backfill FILES=…``: load history without a running stack. A temporary broker takes
the replayed dump files, bronze and refine run to the end of that input (``--available-now``)
into the same lakehouse as ``make run``, and everything stops."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptolake.stack.kafka import KafkaBroker, KafkaBrokerConfig, free_port

log = logging.getLogger(__name__)


class BackfillFailed(RuntimeError):
    """A step exited with an error; its output is above."""


def _run(step: str, argv: list[str], env: dict[str, str]) -> None:
    started = time.monotonic()
    log.info("backfill: %s…", step)
    result = subprocess.run(argv, env={**os.environ, **env}, check=False)
    if result.returncode != 0:
        raise BackfillFailed(f"backfill: {step} failed with exit code {result.returncode}")
    log.info("backfill: %s done in %.1f s", step, time.monotonic() - started)


def run_backfill(files: list[Path], state_dir: Path, symbol: str | None = None) -> None:
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise BackfillFailed(f"no such file: {', '.join(missing)}")
    lakehouse = state_dir.resolve() / "lakehouse"
    run_id = uuid.uuid4().hex[:8]
    topic = f"backfill.{run_id}.trades"
    with tempfile.TemporaryDirectory(prefix="cryptolake-backfill-") as tmp:
        config = KafkaBrokerConfig(data_dir=Path(tmp), port=free_port(),
                                   controller_port=free_port())  # fmt: skip
        with KafkaBroker(config) as broker:
            env = {"CRYPTOLAKE_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                   "CRYPTOLAKE_TRADES_TOPIC": topic,
                   "CRYPTOLAKE_DLQ_TOPIC": f"backfill.{run_id}.dlq"}  # fmt: skip
            replay = [sys.executable, "-m", "cryptolake.producer.cli", "replay",
                      *map(str, files)]  # fmt: skip
            if symbol:
                replay += ["--symbol", symbol]
            _run(f"replaying {len(files)} file(s) into a temporary broker", replay, env)
            jobs_env = {
                **env,
                "CRYPTOLAKE_TABLE_ROOT": str(lakehouse),
                # This input's own checkpoints: the live stream's belong to another broker.
                "CRYPTOLAKE_CHECKPOINT_ROOT": str(
                    lakehouse / "_checkpoints" / f"backfill-{run_id}"
                ),
                "CRYPTOLAKE_STARTING_OFFSETS": "earliest",
                "CRYPTOLAKE_METRICS_PORT": "0",
            }
            jobs = [sys.executable, "-m", "cryptolake.jobs", "all", "--available-now"]
            _run("bronze and refine to the end of the input", jobs, jobs_env)
            _run("table monitor", [sys.executable, "-m", "cryptolake.jobs", "monitor"], jobs_env)
    log.info("backfill: done; tables in %s", lakehouse)
