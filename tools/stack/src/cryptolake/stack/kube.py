"""A Kubernetes control plane on loopback — etcd, kube-apiserver, kube-controller-manager — for
the operator's tests and ``cryptolake-stack kube``. No node, no kubelet: objects are stored,
validated, admitted and garbage-collected, but no pod ever runs.

The programs are the binaries ``make setup`` builds from their Go modules (``tools/go/etcd``,
``tools/go/kubernetes``; see ``binaries.py``). Credentials are made fresh in the data folder at
first start and kept with the etcd data: a CA and the API server's serving certificate signed by
it, the service-account signing key pair, and a static token file with an admin (group
``system:masters``) and the controller-manager's own user. Clients get a kubeconfig
(``ControlPlane.kubeconfig``) with the admin token and the CA.

The pure ``build_*`` functions give each program's arguments and files; ``ControlPlane`` runs
them.
"""

from __future__ import annotations

import base64
import logging
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptolake.stack.binaries import installed_binary
from cryptolake.stack.jars import ToolingMissing
from cryptolake.stack.processes import Service, terminate

log = logging.getLogger(__name__)

# The in-cluster name of the API server; service-account tokens carry it as issuer.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# A private range no loopback test touches; the first address is the `kubernetes` Service's.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
ADMIN_USER = "cryptolake-admin"
# The user the bootstrap RBAC policy binds to ClusterRole system:kube-controller-manager.
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
# Controllers that start and idle without a node or a cloud are left on (`*` = the defaults);
# the cloud ones (service-lb, node-route, cloud-node-lifecycle) turn themselves off without a
# cloud provider.
CONTROLLERS = "*"


class ControlPlaneFailed(RuntimeError):
    """A program did not start or stop as asked; the message quotes its log."""


@dataclass(frozen=True)
class ControlPlaneConfig:
    data_dir: Path
    apiserver_port: int = 6443
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    controller_manager_port: int = 10257
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class ControlPlaneFiles:
    """Where a control plane keeps its credentials, logs and etcd data (under data_dir)."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.pki / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.pki / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.pki / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.pki / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.pki / "sa.pub"

    @property
    def token_file(self) -> Path:
        return self.pki / "tokens.csv"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def controller_manager_kubeconfig(self) -> Path:
        return self.root / "controller-manager.kubeconfig"

    def log(self, program: str) -> Path:
        return self.root / f"{program}.log"


@dataclass(frozen=True)
class Tokens:
    admin: str = field(default_factory=lambda: secrets.token_hex(24))
    controller_manager: str = field(default_factory=lambda: secrets.token_hex(24))

    @classmethod
    def from_token_file(cls, text: str) -> Tokens:
        """The tokens of a file that ``build_token_file`` wrote."""
        by_user = {line.split(",")[1]: line.split(",")[0] for line in text.splitlines() if line}
        return cls(admin=by_user[ADMIN_USER], controller_manager=by_user[CONTROLLER_MANAGER_USER])


def build_token_file(tokens: Tokens) -> str:
    """kube-apiserver's ``--token-auth-file``: ``token,user,uid,"group,…"`` per line."""
    return (
        f'{tokens.admin},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        f"{tokens.controller_manager},{CONTROLLER_MANAGER_USER},{CONTROLLER_MANAGER_USER}\n"
    )


def build_kubeconfig(server: str, ca_cert: bytes, user: str, token: str) -> str:
    """A one-context kubeconfig: ``server`` trusted through ``ca_cert`` (PEM), bearer ``token``."""
    ca_data = base64.b64encode(ca_cert).decode()
    return f"""\
apiVersion: v1
kind: Config
clusters:
- name: cryptolake
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: cryptolake
  context:
    cluster: cryptolake
    user: {user}
    namespace: default
current-context: cryptolake
"""


def build_etcd_args(config: ControlPlaneConfig, files: ControlPlaneFiles) -> list[str]:
    client = f"http://{config.host}:{config.etcd_client_port}"
    peer = f"http://{config.host}:{config.etcd_peer_port}"
    return [
        "--name=cryptolake",
        f"--data-dir={files.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=cryptolake={peer}",
        # Throw-away test data: no fsync makes every write (and so every API call) faster.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def build_apiserver_args(config: ControlPlaneConfig, files: ControlPlaneFiles) -> list[str]:
    return [
        f"--etcd-servers=http://{config.host}:{config.etcd_client_port}",
        f"--bind-address={config.host}",
        f"--advertise-address={config.host}",
        f"--secure-port={config.apiserver_port}",
        f"--cert-dir={files.pki}",
        f"--tls-cert-file={files.serving_cert}",
        f"--tls-private-key-file={files.serving_key}",
        f"--client-ca-file={files.ca_cert}",
        f"--token-auth-file={files.token_file}",
        "--authorization-mode=RBAC",
        "--anonymous-auth=true",  # only for /healthz, /readyz, /livez, /version (RBAC)
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={files.sa_pub}",
        f"--service-account-signing-key-file={files.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # The `kubernetes` Endpoints would list 127.0.0.1, which Endpoints validation refuses
        # (loopback); nothing in the cluster dials the API server through the Service here.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def build_controller_manager_args(
    config: ControlPlaneConfig, files: ControlPlaneFiles
) -> list[str]:
    kubeconfig = files.controller_manager_kubeconfig
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={config.host}",
        f"--secure-port={config.controller_manager_port}",
        f"--cert-dir={files.pki / 'controller-manager'}",
        f"--controllers={CONTROLLERS}",
        # Each controller calls the API server as its own service account (RBAC as in a cluster).
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={files.sa_key}",
        f"--root-ca-file={files.ca_cert}",
        # Signs approved CertificateSigningRequests (webhook serving certificates, for one).
        f"--cluster-signing-cert-file={files.ca_cert}",
        f"--cluster-signing-key-file={files.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def run_openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ToolingMissing("openssl is not on PATH (Debian: apt-get install openssl)")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneFailed(f"openssl {args[0]} failed:\n{result.stderr.strip()}")


def load_or_make_credentials(files: ControlPlaneFiles, host: str) -> Tokens:
    """The credentials of an earlier start in the same folder (so that kubeconfigs and
    service-account tokens stay valid), else new ones."""
    kept = (files.ca_cert, files.serving_cert, files.serving_key, files.sa_key, files.sa_pub)
    if files.token_file.exists() and all(path.exists() for path in kept):
        return Tokens.from_token_file(files.token_file.read_text())
    tokens = Tokens()
    make_credentials(files, host, build_token_file(tokens))
    return tokens


def make_credentials(files: ControlPlaneFiles, host: str, token_file: str) -> None:
    """A CA, the API server's certificate from it, the service-account key pair, and the
    token file (``build_token_file``'s text, or a larger cluster's)."""
    files.pki.mkdir(parents=True, exist_ok=True)
    run_openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        "-subj", "/CN=cryptolake-kube-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(files.ca_key), "-out", str(files.ca_cert),
    )  # fmt: skip
    names = [
        f"IP:{host}",
        f"IP:{KUBERNETES_SERVICE_IP}",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    run_openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        "-CA", str(files.ca_cert), "-CAkey", str(files.ca_key),
        "-subj", "/CN=kube-apiserver",
        "-addext", "subjectAltName=" + ",".join(names),
        "-addext", "extendedKeyUsage=serverAuth",
        "-keyout", str(files.serving_key), "-out", str(files.serving_cert),
    )  # fmt: skip
    run_openssl("genrsa", "-out", str(files.sa_key), "2048")
    run_openssl("rsa", "-in", str(files.sa_key), "-pubout", "-out", str(files.sa_pub))
    files.token_file.write_text(token_file)
    for secret in (files.ca_key, files.serving_key, files.sa_key, files.token_file):
        secret.chmod(0o600)


class _Program:
    """One control-plane process, its output in ``<data_dir>/<name>.log``."""

    def __init__(self, name: str, log_file: Path) -> None:
        self.name = name
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, args: list[str]) -> None:
        output = self.log_file.open("ab")
        # Its own process group, so Ctrl-C in a terminal reaches our handler, not the program.
        self.process = subprocess.Popen(
            [str(installed_binary(self.name)), *args],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output.close()

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate(process, self.name, timeout_s)


class ControlPlane(Service):
    """``start()`` runs etcd, kube-apiserver and kube-controller-manager and returns once each
    answers its health check; ``stop()`` ends them in reverse order. Also a context manager.
    """

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.files = ControlPlaneFiles(config.data_dir)
        self.tokens = Tokens()  # replaced by start(): the folder's own, or new ones
        self._etcd = _Program("etcd", self.files.log("etcd"))
        self._apiserver = _Program("kube-apiserver", self.files.log("kube-apiserver"))
        self._controller_manager = _Program(
            "kube-controller-manager", self.files.log("kube-controller-manager")
        )

    @property
    def server(self) -> str:
        return f"https://{self.config.host}:{self.config.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters), written by ``start()``."""
        return self.files.admin_kubeconfig

    @property
    def admin_token(self) -> str:
        return self.tokens.admin

    @property
    def ca_cert(self) -> Path:
        return self.files.ca_cert

    def start(self, timeout_s: float = 90.0) -> None:
        if self._apiserver.process is not None:
            return
        # Fail before starting anything when a binary is missing.
        for program in (self._etcd, self._apiserver, self._controller_manager):
            installed_binary(program.name)
        started = time.monotonic()
        deadline = started + timeout_s
        self.files.root.mkdir(parents=True, exist_ok=True)
        self.tokens = load_or_make_credentials(self.files, self.config.host)
        ca_pem = self.files.ca_cert.read_bytes()
        self.kubeconfig.write_text(
            build_kubeconfig(self.server, ca_pem, ADMIN_USER, self.tokens.admin)
        )
        self.files.controller_manager_kubeconfig.write_text(
            build_kubeconfig(
                self.server, ca_pem, CONTROLLER_MANAGER_USER, self.tokens.controller_manager
            )
        )
        for kubeconfig in (self.kubeconfig, self.files.controller_manager_kubeconfig):
            kubeconfig.chmod(0o600)
        try:
            log.info("kube: starting etcd on %s:%d", self.config.host, self.config.etcd_client_port)
            self._etcd.start(build_etcd_args(self.config, self.files))
            self._wait(self._etcd, self._etcd_healthy, deadline)
            log.info("kube: starting kube-apiserver on %s", self.server)
            self._apiserver.start(build_apiserver_args(self.config, self.files))
            self._wait(self._apiserver, self._apiserver_ready, deadline)
            log.info("kube: starting kube-controller-manager")
            self._controller_manager.start(build_controller_manager_args(self.config, self.files))
            self._wait(self._controller_manager, self._controller_manager_healthy, deadline)
        except BaseException:
            self.stop()
            raise
        log.info(
            "kube: control plane ready on %s after %.1f s (kubeconfig %s)",
            self.server,
            time.monotonic() - started,
            self.kubeconfig,
        )

    def _https_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.files.ca_cert))

    def _etcd_healthy(self) -> str | None:
        url = f"http://{self.config.host}:{self.config.etcd_client_port}/health"
        return probe_url(url, None, lambda body: '"health":"true"' in body)

    def _apiserver_ready(self) -> str | None:
        return probe_url(f"{self.server}/readyz", self._https_context(), lambda body: body == "ok")

    def _controller_manager_healthy(self) -> str | None:
        # Its serving certificate is self-signed (--cert-dir): reachability is all we check.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        url = f"https://{self.config.host}:{self.config.controller_manager_port}/healthz"
        return probe_url(url, insecure, lambda body: body == "ok")

    def _wait(self, program: _Program, probe: Callable[[], str | None], deadline: float) -> None:
        """Until ``probe`` returns None (healthy); its last complaint and the log tail if not."""
        started = time.monotonic()
        problem: str | None = "no answer yet"
        while time.monotonic() < deadline:
            code = program.exited()
            if code is not None:
                raise ControlPlaneFailed(
                    f"{program.name} exited with code {code}:\n{program.log_tail()}"
                )
            problem = probe()
            if problem is None:
                log.info("kube: %s ready after %.1f s", program.name, time.monotonic() - started)
                return
            time.sleep(0.25)
        raise ControlPlaneFailed(
            f"{program.name} not ready in time ({problem}); last lines of {program.log_file}:\n"
            f"{program.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        return "\n\n".join(
            f"== {program.name} ==\n{program.log_tail(lines)}"
            for program in (self._etcd, self._apiserver, self._controller_manager)
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM each (controller-manager, API server, then etcd), SIGKILL if one lingers."""
        if self._apiserver.process is not None:
            log.info("kube: stopping the control plane on %s", self.server)
        for program in (self._controller_manager, self._apiserver, self._etcd):
            program.stop(timeout_s)


def probe_url(
    url: str, context: ssl.SSLContext | None, healthy: Callable[[str], bool]
) -> str | None:
    """None when ``url`` answers 200 with a healthy body, else what was wrong."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            body = response.read().decode(errors="replace").strip()
            return None if healthy(body) else f"HTTP {response.status}: {body[:200]}"
    except urllib.error.HTTPError as exc:
        # /readyz answers 500 listing the checks still failing until the server is ready.
        detail = exc.read().decode(errors="replace")
        failing = [line for line in detail.splitlines() if "failed" in line]
        return f"HTTP {exc.code}: {'; '.join(failing) or detail[:200]}"
    except OSError as exc:  # refused while starting, TLS handshake before the cert is loaded
        return str(exc)
