"""Child processes of the stack: one way to stop them, one shape for their launchers."""

from __future__ import annotations

import logging
import signal
import subprocess
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)


def terminate(process: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    """SIGTERM for a clean shutdown, SIGKILL if it has not ended within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s: no clean stop within %.0f s, killing it", what, timeout_s)
        process.kill()
        process.wait()


class Service:
    """A launcher with ``start()`` and ``stop()``; as a context manager it runs them."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
