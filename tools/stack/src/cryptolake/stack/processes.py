"""Child processes of the stack: one way to stop them."""

from __future__ import annotations

import logging
import signal
import subprocess

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
