"""A single-node MinIO S3 server on loopback, for the local stack and tests, and the S3 settings
clients use to reach it.

The server runs the binary that ``make setup`` builds from MinIO's Go module
(``tools/go/minio``, see ``binaries.py``); its data folder survives restarts.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cryptolake.common.s3 import REGION
from cryptolake.stack.binaries import installed_binary
from cryptolake.stack.processes import Service, terminate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# MinIO's default region; S3 clients sign requests for it.


class MinioFailed(RuntimeError):
    """The server did not start or stop as asked; the message quotes its log."""


@dataclass(frozen=True)
class MinioServerConfig:
    data_dir: Path
    port: int = 9000
    host: str = "127.0.0.1"
    # Loopback-only development credentials (MinIO wants a password of 8+ characters).
    root_user: str = "cryptolake"
    root_password: str = "cryptolake"
    # The web console on this port; None turns it off (tests, and one port less to find).
    console_port: int | None = None
    # HTTPS with public.crt (the chain, leaf first) and private.key from this folder; None:
    # plain HTTP. The CA at the chain's end is what the readiness check trusts.
    certs_dir: Path | None = None


def build_server_env(config: MinioServerConfig, base: dict[str, str]) -> dict[str, str]:
    """The environment for ``minio server``: ``base`` without its MINIO_* variables (a
    developer's own settings must not leak in), plus the credentials and switches below."""
    env = {key: value for key, value in base.items() if not key.startswith("MINIO_")}
    env.update(
        {
            "MINIO_ROOT_USER": config.root_user,
            "MINIO_ROOT_PASSWORD": config.root_password,
            # Else the server asks dl.min.io for a newer release at every start.
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER": "off" if config.console_port is None else "on",
        }
    )
    return env


def build_server_args(config: MinioServerConfig) -> list[str]:
    """The ``minio`` arguments after the binary."""
    args = ["server", "--address", f"{config.host}:{config.port}"]
    if config.console_port is not None:
        args += ["--console-address", f"{config.host}:{config.console_port}"]
    if config.certs_dir is not None:
        args += ["--certs-dir", str(config.certs_dir)]
    return [*args, str(config.data_dir / "data")]


class MinioServer(Service):
    """Start with ``start()`` (waits until /minio/health/ready answers), stop with ``stop()``;
    also a context manager."""

    def __init__(self, config: MinioServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = config.data_dir / "minio.log"

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.config.certs_dir else "http"
        return f"{scheme}://{self.config.host}:{self.config.port}"

    @property
    def access_key(self) -> str:
        return self.config.root_user

    @property
    def secret_key(self) -> str:
        return self.config.root_password

    def start(self, timeout_s: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        binary = installed_binary("minio")
        (self.config.data_dir / "data").mkdir(parents=True, exist_ok=True)
        log.info("minio: starting on %s (data %s)", self.endpoint, self.config.data_dir)
        output = self.log_file.open("ab")
        # Its own process group, so Ctrl-C in a terminal reaches the supervisor, not MinIO.
        self.process = subprocess.Popen(
            [str(binary), *build_server_args(self.config)],
            env=build_server_env(self.config, dict(os.environ)),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output.close()
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        started = time.monotonic()
        deadline = started + timeout_s
        url = f"{self.endpoint}/minio/health/ready"
        certs = self.config.certs_dir
        trust = ssl.create_default_context(cafile=certs / "public.crt") if certs else None
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise MinioFailed(
                    f"minio exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=trust) as response:
                    if response.status == 200:
                        log.info(
                            "minio: ready on %s after %.1f s",
                            self.endpoint,
                            time.monotonic() - started,
                        )
                        return
                    last_error = f"HTTP {response.status}"
            # A refused connection and HTTP 503 (still starting) both land here.
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.2)
        self.stop()
        raise MinioFailed(
            f"minio not ready after {timeout_s:.0f} s ({last_error}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM for a clean shutdown, SIGKILL if it does not end in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        log.info("minio: stopping on %s", self.endpoint)
        terminate(process, "minio", timeout_s)


def s3_client(endpoint: str, access_key: str, secret_key: str) -> S3Client:
    """A boto3 S3 client for ``endpoint`` with path-style addressing (``endpoint/bucket/key``:
    a loopback endpoint has no per-bucket host names)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def ensure_bucket(endpoint: str, access_key: str, secret_key: str, bucket: str) -> None:
    """Create ``bucket`` unless this account already owns it (idempotent)."""
    try:
        s3_client(endpoint, access_key, secret_key).create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
        return
    log.info("s3: created bucket %s on %s", bucket, endpoint)
