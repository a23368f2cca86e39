"""A real single-node Kubernetes cluster without Docker: ``make cluster-up`` / ``cluster-down`` /
``cluster-status``.

Everything runs inside the network namespace ``cryptolake``, joined to the host by a veth pair
(host 10.231.0.1, node 10.231.0.2) and with no route out: node, pod and service traffic never
leaves the machine. The programs: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubelet and kube-proxy built from their Go modules (``binaries.py``); Debian's containerd, runc,
CNI plugins (bridge + host-local) and iptables; CoreDNS (a Go-built binary in an image of our
own) as the cluster DNS; kube-router's firewall (Go-built too; Debian's ipset) enforcing
NetworkPolicies; a hostPath volume provisioner of ours (``provisioner.py``) as the default
StorageClass. No image is ever pulled: the sandbox ("pause") image and every other image are
built locally (``images.py``) and imported into containerd.

The processes are daemons: ``up`` starts what is not running and returns; ``down`` stops them
all, the pods' containers included, and removes the namespace. State (PKI, etcd, containerd's
images, volumes) stays in ``CLUSTER_DIR`` for a fast warm start.

The pure ``build_*`` functions at the top give every program's arguments and files; the
``Cluster`` class below runs them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptolake.stack.binaries import installed_binary
from cryptolake.stack.images import CLUSTER_IMAGES, COREDNS, build_images, image_refs
from cryptolake.stack.jars import ToolingMissing
from cryptolake.stack.kube import (
    ADMIN_USER,
    CONTROLLER_MANAGER_USER,
    ControlPlaneConfig,
    ControlPlaneFiles,
    build_apiserver_args,
    build_controller_manager_args,
    build_etcd_args,
    build_kubeconfig,
    make_credentials,
    probe_url,
    run_openssl,
)

log = logging.getLogger(__name__)

NETNS = "cryptolake"
HOST_VETH, NODE_VETH = "cl-host", "cl-node"
HOST_IP, NODE_IP, LINK_PREFIX = "10.231.0.1", "10.231.0.2", 30
NODE_NAME = "cryptolake-node"
CLUSTER_CIDR, NODE_POD_CIDR = "10.244.0.0/16", "10.244.0.0/24"
DNS_SERVICE_IP = "10.96.0.10"  # in kube.py's service range, next to the `kubernetes` Service
CLUSTER_DOMAIN = "cluster.local"
APISERVER_PORT = 6443
NETWORK_POLICY_HEALTH_PORT = 20244  # kube-router's default
STORAGE_CLASS = "cryptolake-local"
PROVISIONER_NAME = "cryptolake.io/hostpath"
SCHEDULER_USER = "system:kube-scheduler"
NODE_USER = f"system:node:{NODE_NAME}"
PROXY_USER = "system:kube-proxy"
NETWORK_POLICY_USER = "system:kube-router"
CNI_BIN_DIR = Path("/usr/lib/cni")
DEBIAN_PROGRAMS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "conntrack": "conntrack",
    "ipset": "ipset",
}


class ClusterFailed(RuntimeError):
    """A step of cluster-up or cluster-down failed; the message says which and quotes a log."""


def cluster_dir() -> Path:
    """Where the cluster keeps its state: $CRYPTOLAKE_CLUSTER_DIR, else
    /var/lib/cryptolake/cluster (one cluster per machine: it owns the `cryptolake` netns)."""
    return Path(os.environ.get("CRYPTOLAKE_CLUSTER_DIR", "/var/lib/cryptolake/cluster"))


@dataclass(frozen=True)
class ClusterFiles(ControlPlaneFiles):
    """The control plane's files (kube.py) plus the node's, under one root."""

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pids(self) -> Path:
        return self.run_dir / "pids"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def kubelet_client_cert(self) -> Path:
        return self.pki / "apiserver-kubelet-client.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.pki / "apiserver-kubelet-client.key"

    def kubeconfig_of(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"


@dataclass(frozen=True)
class ClusterTokens:
    """Bearer tokens of the cluster's users (kube-apiserver --token-auth-file)."""

    admin: str = field(default_factory=lambda: secrets.token_hex(24))
    controller_manager: str = field(default_factory=lambda: secrets.token_hex(24))
    scheduler: str = field(default_factory=lambda: secrets.token_hex(24))
    node: str = field(default_factory=lambda: secrets.token_hex(24))
    proxy: str = field(default_factory=lambda: secrets.token_hex(24))
    network_policy: str = field(default_factory=lambda: secrets.token_hex(24))

    def users(self) -> dict[str, tuple[str, str]]:
        """user → (token, groups). The bootstrap RBAC policy binds system:kube-scheduler and
        system:kube-proxy by user; the Node authorizer knows system:node:<name> in system:nodes."""
        return {
            ADMIN_USER: (self.admin, "system:masters"),
            CONTROLLER_MANAGER_USER: (self.controller_manager, ""),
            SCHEDULER_USER: (self.scheduler, ""),
            NODE_USER: (self.node, "system:nodes"),
            PROXY_USER: (self.proxy, ""),
            NETWORK_POLICY_USER: (self.network_policy, ""),
        }

    @classmethod
    def from_token_file(cls, text: str) -> ClusterTokens:
        by_user = {line.split(",")[1]: line.split(",")[0] for line in text.splitlines() if line}
        return cls(
            admin=by_user[ADMIN_USER],
            controller_manager=by_user[CONTROLLER_MANAGER_USER],
            scheduler=by_user[SCHEDULER_USER],
            node=by_user[NODE_USER],
            proxy=by_user[PROXY_USER],
            network_policy=by_user[NETWORK_POLICY_USER],
        )


def build_cluster_token_file(tokens: ClusterTokens) -> str:
    lines = []
    for user, (token, groups) in tokens.users().items():
        lines.append(f'{token},{user},{user},"{groups}"' if groups else f"{token},{user},{user}")
    return "\n".join(lines) + "\n"


def control_plane_config(files: ClusterFiles) -> ControlPlaneConfig:
    """kube.py's control plane, on the node's address instead of loopback."""
    return ControlPlaneConfig(
        data_dir=files.root,
        apiserver_port=APISERVER_PORT,
        etcd_client_port=2379,
        etcd_peer_port=2380,
        controller_manager_port=10257,
        host=NODE_IP,
    )


def with_args(args: list[str], drop: Iterable[str] = (), **values: str) -> list[str]:
    """``args`` without the flags named in ``drop``, with ``--flag=value`` for each keyword
    (``kubelet_client_key`` → ``--kubelet-client-key``) replacing any earlier value."""
    flags = {"--" + name.replace("_", "-"): value for name, value in values.items()}
    removed = set(drop) | set(flags)
    kept = [arg for arg in args if arg.split("=", 1)[0] not in removed]
    return kept + [f"{flag}={value}" for flag, value in flags.items()]


def build_cluster_apiserver_args(files: ClusterFiles) -> list[str]:
    """The loopback control plane's API server, made a node's: endpoints reconciled (the
    `kubernetes` Service points at the node address), the Node authorizer, kubelet client certs."""
    return with_args(
        build_apiserver_args(control_plane_config(files), files),
        drop=("--endpoint-reconciler-type",),
        authorization_mode="Node,RBAC",
        kubelet_client_certificate=str(files.kubelet_client_cert),
        kubelet_client_key=str(files.kubelet_client_key),
        kubelet_preferred_address_types="InternalIP",
        token_auth_file=str(files.token_file),
    )


def build_cluster_controller_manager_args(files: ClusterFiles) -> list[str]:
    return with_args(
        build_controller_manager_args(control_plane_config(files), files),
        allocate_node_cidrs="true",
        cluster_cidr=CLUSTER_CIDR,
        node_cidr_mask_size="24",
        cluster_name="cryptolake",
    )


def build_scheduler_args(files: ClusterFiles) -> list[str]:
    kubeconfig = files.kubeconfig_of("scheduler")
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={NODE_IP}",
        "--secure-port=10259",
        f"--cert-dir={files.pki / 'scheduler'}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def build_containerd_config(files: ClusterFiles, sandbox_image: str) -> str:
    """containerd 1.6 (config version 2): its own root, state and socket, CRI with runc and the
    cgroupfs driver, our CNI config, and the locally built sandbox image (nothing is pulled)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{files.containerd_root}"
state = "{files.run_dir / "containerd-state"}"

[grpc]
  address = "{files.containerd_socket}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  # Without CAP_SYS_RESOURCE (some sandboxes drop it) no process may lower its OOM score:
  # never ask below containerd's own (kubelet asks -998 for pod sandboxes).
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{files.cni_conf_dir}"
"""


def build_cni_config() -> str:
    """One bridge for the node's pods; no masquerade and no route out of the namespace."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "cryptolake",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": NODE_POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def build_kubelet_config(files: ClusterFiles) -> str:
    """KubeletConfiguration: cgroupfs (cgroup v1 still accepted by 1.34), image GC that never
    evicts (imported images cannot be pulled again), eviction thresholds a laptop-sized node
    does not trip, cluster DNS."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": NODE_IP,
        "healthzPort": 10248,
        "authentication": {
            "x509": {"clientCAFile": str(files.ca_cert)},
            "webhook": {"enabled": True},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{files.containerd_socket}",
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(files.resolv_conf),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "87600h",
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "maxPods": 110,
        "podCIDR": NODE_POD_CIDR,
        "hairpinMode": "hairpin-veth",
        "registerNode": True,
        "serverTLSBootstrap": False,
        "rotateCertificates": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
        "localStorageCapacityIsolation": True,
        "shutdownGracePeriod": "0s",
    }
    return json.dumps(config, indent=2)


def build_kubelet_args(files: ClusterFiles) -> list[str]:
    return [
        f"--config={files.kubelet_config}",
        f"--kubeconfig={files.kubeconfig_of('kubelet')}",
        f"--root-dir={files.kubelet_dir}",
        f"--cert-dir={files.pki / 'kubelet'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}",
        "--v=1",
    ]


def build_kube_proxy_config(files: ClusterFiles) -> str:
    """iptables mode; every Service connection masqueraded, so replies between pods on the
    bridge come back through the node (no dependence on br_netfilter settings)."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"{NODE_IP}:10256",
        "metricsBindAddress": f"{NODE_IP}:10249",
        "clientConnection": {"kubeconfig": str(files.kubeconfig_of("kube-proxy"))},
        "iptables": {"masqueradeAll": True, "syncPeriod": "10s"},
        "oomScoreAdj": 0,  # the default -999 needs CAP_SYS_RESOURCE
        # Leave the machine's conntrack table size alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "nodePortAddresses": [f"{NODE_IP}/32"],
    }
    return json.dumps(config, indent=2)


def build_network_policy_args(files: ClusterFiles) -> list[str]:
    """kube-router as a NetworkPolicy firewall only (iptables and ipset in the node's
    namespace): the bridge CNI routes and kube-proxy serves Services, as before. Traffic from
    the node itself (kubelet probes, `kubectl exec`) stays allowed, as kube-router does."""
    return [
        f"--kubeconfig={files.kubeconfig_of('kube-router')}",
        f"--hostname-override={NODE_NAME}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        f"--health-port={NETWORK_POLICY_HEALTH_PORT}",
        "--v=1",
    ]


def build_network_policy_rbac() -> list[dict[str, object]]:
    """What kube-router's firewall reads (its upstream ClusterRole, read-only)."""
    name = "cryptolake:kube-router"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": NETWORK_POLICY_USER,
                }
            ],
        },
    ]


def build_addons(coredns_image: str) -> list[dict[str, object]]:
    """The default StorageClass (our hostPath provisioner) and CoreDNS for cluster.local."""
    labels = {"k8s-app": "kube-dns"}
    corefile = f"""\
.:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
}}
"""
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER_NAME,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": coredns_image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}},
                                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]


def cluster_images(*, build: bool) -> list[tuple[str, Path]]:
    """(reference, OCI archive) of every image the cluster needs: the sandbox and CoreDNS
    always; with ``build``, the project's images too (built or found in the cache)."""
    wanted = None if build else list(CLUSTER_IMAGES)
    return [(archive.reference, archive.path) for archive in build_images(wanted).values()]


# --- the shell: processes, network, files --------------------------------------------------


def _run(
    *cmd: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise ClusterFailed(
            f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr.strip()}"
        )
    return done


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _in_netns(*cmd: str) -> list[str]:
    # nsenter, not `ip netns exec`: that also makes a mount namespace with a fresh /sys, which
    # hides /sys/fs/cgroup from the kubelet and the container runtime.
    return ["nsenter", f"--net=/var/run/netns/{NETNS}", "--", *cmd]


@dataclass(frozen=True)
class Daemon:
    """A detached process of the cluster, known by its pid file (it outlives `cluster-up`)."""

    name: str
    files: ClusterFiles

    @property
    def pid_file(self) -> Path:
        return self.files.pids / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.files.log(self.name)

    def pid(self) -> int | None:
        """The pid while the process runs (and is still ours), else None."""
        try:
            pid = int(self.pid_file.read_text())
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None  # exited, not yet reaped
        # An empty command line: between nsenter and the exec of the program.
        return pid if not cmdline or self.name.encode() in cmdline else None

    def start(self, argv: list[str], *, netns: bool = True) -> None:
        self.files.pids.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as output:
            process = subprocess.Popen(
                _in_netns(*argv) if netns else argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not ended by the shell that ran `make cluster-up`
            )
        self.pid_file.write_text(str(process.pid))

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout_s``; True when it was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.pid() is not None:
            log.warning("cluster: %s did not stop within %.0f s, killing it", self.name, timeout_s)
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def started_at(self) -> float | None:
        """When the running process started (epoch seconds), from its pid file's mtime."""
        return self.pid_file.stat().st_mtime if self.pid() is not None else None

    def log_tail(self, lines: int = 25) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


# Start order; `down` stops in reverse.
DAEMONS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "kube-router",
    "provisioner",
)


class Cluster:
    """``up()``, ``down()``, ``status()`` of the machine's one local cluster."""

    def __init__(self, root: Path | None = None, progress: Callable[[str], None] | None = None):
        self.files = ClusterFiles(root or cluster_dir())
        self.daemons = {name: Daemon(name, self.files) for name in DAEMONS}
        self.progress = progress or (lambda message: log.info("cluster: %s", message))

    @property
    def kubeconfig(self) -> Path:
        return self.files.admin_kubeconfig

    @property
    def server(self) -> str:
        return f"https://{NODE_IP}:{APISERVER_PORT}"

    # --- up -------------------------------------------------------------------------------

    def up(self, images: Iterable[tuple[str, Path]] = (), timeout_s: float = 240.0) -> None:
        """Start whatever is not running; import ``images`` ((ref, OCI archive) pairs) into
        containerd; return once the node is Ready and CoreDNS answers."""
        started = time.monotonic()
        deadline = started + timeout_s
        self._check_tools()
        for daemon in self.daemons.values():
            if daemon.pid() is None:  # a stale pid file would read as "exited" below
                daemon.pid_file.unlink(missing_ok=True)
        self._step("kernel interfaces", self._kernel_interfaces)
        self._step("network namespace and veth", self._network)
        self._step("credentials and config files", self._write_files)
        self._ensure(
            "etcd",
            [
                str(installed_binary("etcd")),
                *build_etcd_args(control_plane_config(self.files), self.files),
            ],
        )
        self._ensure(
            "kube-apiserver",
            [str(installed_binary("kube-apiserver")), *build_cluster_apiserver_args(self.files)],
        )
        self._wait("kube-apiserver", self._apiserver_ready, deadline)
        self._ensure(
            "kube-controller-manager",
            [
                str(installed_binary("kube-controller-manager")),
                *build_cluster_controller_manager_args(self.files),
            ],
        )
        self._ensure(
            "kube-scheduler",
            [str(installed_binary("kube-scheduler")), *build_scheduler_args(self.files)],
        )
        self._ensure(
            "containerd",
            [
                shutil.which("containerd") or "containerd",
                "--config",
                str(self.files.containerd_config),
            ],
        )
        self._wait("containerd", self._containerd_ready, deadline)
        for reference, archive in images:
            self.import_image(reference, archive)
        self._ensure("kubelet", [str(installed_binary("kubelet")), *build_kubelet_args(self.files)])
        self._ensure(
            "kube-proxy",
            [str(installed_binary("kube-proxy")), f"--config={self.files.kube_proxy_config}"],
        )
        self._ensure(
            "provisioner",
            [
                sys.executable,
                "-m",
                "cryptolake.stack.provisioner",
                "--kubeconfig",
                str(self.kubeconfig),
                "--root",
                str(self.files.volumes),
            ],
            netns=False,
        )
        self._wait("kubelet", self._node_ready, deadline)
        self._step("addons: StorageClass, CoreDNS, RBAC of the NetworkPolicy firewall",
                   self._apply_addons)  # fmt: skip
        self._wait("coredns", self._dns_ready, deadline)
        self._ensure(
            "kube-router",
            [str(installed_binary("kube-router")), *build_network_policy_args(self.files)],
        )
        self._wait("kube-router", self._network_policies_ready, deadline)
        self.progress(
            f"cluster ready in {time.monotonic() - started:.0f} s: "
            f"export KUBECONFIG={self.kubeconfig}"
        )

    def _step(self, what: str, action: Callable[[], None]) -> None:
        began = time.monotonic()
        action()
        self.progress(f"{what}: done ({time.monotonic() - began:.1f} s)")

    def _check_tools(self) -> None:
        if os.geteuid() != 0:
            raise ToolingMissing("the local cluster needs root (network namespace, mounts)")
        missing = [
            f"{cmd} (Debian: {pkg})"
            for cmd, pkg in DEBIAN_PROGRAMS.items()
            if shutil.which(cmd) is None
        ]
        if not (CNI_BIN_DIR / "bridge").exists():
            missing.append(f"{CNI_BIN_DIR}/bridge (Debian: containernetworking-plugins)")
        if missing:
            raise ToolingMissing(f"missing: {', '.join(missing)}: run `make setup`")
        for name in (
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kube-router",
        ):
            installed_binary(name)

    def _kernel_interfaces(self) -> None:
        # kubelet's OOM watcher reads /dev/kmsg; some VMs and containers lack it.
        if not Path("/dev/kmsg").exists():
            _run("mknod", "-m", "600", "/dev/kmsg", "c", "1", "11")

    def _network(self) -> None:
        """The node's namespace: loopback and the veth end with the node address; the host's end
        with 10.231.0.1/30; no default route, so nothing inside can reach beyond the host."""
        if NETNS not in _run("ip", "netns", "list").stdout.split():
            _run("ip", "netns", "add", NETNS)
        if _run("ip", "link", "show", HOST_VETH, check=False).returncode != 0:
            _run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH)
            _run("ip", "link", "set", NODE_VETH, "netns", NETNS)
            _run("ip", "addr", "add", f"{HOST_IP}/{LINK_PREFIX}", "dev", HOST_VETH)
            _run("ip", "link", "set", HOST_VETH, "up")
            _run(*_in_netns("ip", "addr", "add", f"{NODE_IP}/{LINK_PREFIX}", "dev", NODE_VETH))
        _run(*_in_netns("ip", "link", "set", "lo", "up"))
        _run(*_in_netns("ip", "link", "set", NODE_VETH, "up"))
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
            ("net.ipv4.conf.all.route_localnet", "1"),
        ):
            _run(*_in_netns("sysctl", "-q", "-w", f"{key}={value}"), check=False)
        routes = _run(*_in_netns("ip", "route", "show", "default")).stdout.strip()
        if routes:
            raise ClusterFailed(f"the {NETNS} namespace has a default route ({routes}): remove it")

    def _write_files(self) -> None:
        files = self.files
        for folder in (
            files.root,
            files.run_dir,
            files.cni_conf_dir,
            files.kubelet_dir,
            files.volumes,
            files.containerd_root,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        tokens = self._credentials()
        ca_pem = files.ca_cert.read_bytes()
        users = {
            "admin": (ADMIN_USER, tokens.admin),
            "controller-manager": (CONTROLLER_MANAGER_USER, tokens.controller_manager),
            "scheduler": (SCHEDULER_USER, tokens.scheduler),
            "kubelet": (NODE_USER, tokens.node),
            "kube-proxy": (PROXY_USER, tokens.proxy),
            "kube-router": (NETWORK_POLICY_USER, tokens.network_policy),
        }
        for component, (user, token) in users.items():
            path = files.kubeconfig_of(component)
            path.write_text(build_kubeconfig(self.server, ca_pem, user, token))
            path.chmod(0o600)
        # Unchanged files are left alone: kube-proxy exits when its config file changes.
        _write_if_changed(
            files.containerd_config, build_containerd_config(files, image_refs()["pause"])
        )
        _write_if_changed(files.cni_conf_dir / "10-cryptolake.conflist", build_cni_config())
        _write_if_changed(files.kubelet_config, build_kubelet_config(files))
        _write_if_changed(files.kube_proxy_config, build_kube_proxy_config(files))
        # Pods with dnsPolicy Default (CoreDNS) get no upstream: there is none to reach.
        _write_if_changed(files.resolv_conf, "")

    def _credentials(self) -> ClusterTokens:
        files = self.files
        kept = (files.ca_cert, files.serving_cert, files.sa_key, files.kubelet_client_cert)
        if files.token_file.exists() and all(path.exists() for path in kept):
            try:
                return ClusterTokens.from_token_file(files.token_file.read_text())
            except KeyError as missing:
                # An older layout: make everything anew, but not under running daemons.
                running = [n for n, d in self.daemons.items() if d.pid() is not None]
                if running:
                    raise ClusterFailed(
                        f"the cluster's credentials predate this version (no user {missing}) "
                        f"and {', '.join(running)} still run with them: `make cluster-down`, "
                        "then `make cluster-up` (state is kept)"
                    ) from None
        tokens = ClusterTokens()
        make_credentials(files, NODE_IP, build_cluster_token_file(tokens))
        # What kube-apiserver presents to kubelets (exec, logs, port-forward).
        run_openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-CA",
            str(files.ca_cert),
            "-CAkey",
            str(files.ca_key),
            "-subj",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-keyout",
            str(files.kubelet_client_key),
            "-out",
            str(files.kubelet_client_cert),
        )
        files.kubelet_client_key.chmod(0o600)
        return tokens

    def _ensure(self, name: str, argv: list[str], *, netns: bool = True) -> None:
        daemon = self.daemons[name]
        if daemon.pid() is not None:
            self.progress(f"{name}: already running (pid {daemon.pid()})")
            return
        daemon.start(argv, netns=netns)
        self.progress(f"{name}: started (log {daemon.log_file})")

    def _wait(self, name: str, probe: Callable[[], str | None], deadline: float) -> None:
        began = time.monotonic()
        problem: str | None = "no answer yet"
        while time.monotonic() < deadline:
            for daemon in self.daemons.values():
                if daemon.pid_file.exists() and daemon.pid() is None:
                    raise ClusterFailed(f"{daemon.name} exited:\n{daemon.log_tail()}")
            problem = probe()
            if problem is None:
                self.progress(f"{name}: ready ({time.monotonic() - began:.1f} s)")
                return
            time.sleep(0.5)
        waited_on = self.daemons.get(name)
        tail = f"\n{waited_on.log_tail()}" if waited_on else ""
        raise ClusterFailed(f"{name} not ready in time: {problem}{tail}")

    # --- probes ---------------------------------------------------------------------------

    def _apiserver_ready(self) -> str | None:
        context = ssl.create_default_context(cafile=str(self.files.ca_cert))
        return probe_url(f"{self.server}/readyz", context, lambda body: body == "ok")

    def _containerd_ready(self) -> str | None:
        if not self.files.containerd_socket.exists():
            return "no socket yet"
        done = self.ctr("version", check=False)
        return None if done.returncode == 0 else done.stderr.strip()

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            str(installed_binary("kubectl")),
            f"--kubeconfig={self.kubeconfig}",
            *args,
            check=check,
            stdin=stdin,
        )

    def _node_ready(self) -> str | None:
        """Ready, as reported by this kubelet (a heartbeat after it started)."""
        done = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if done.returncode != 0:
            return "node not registered yet"
        conditions = json.loads(done.stdout)["status"].get("conditions", [])
        ready = [c for c in conditions if c["type"] == "Ready"]
        if not ready:
            return "no Ready condition yet"
        heartbeat = datetime.fromisoformat(ready[0]["lastHeartbeatTime"].replace("Z", "+00:00"))
        kubelet_started = self.daemons["kubelet"].started_at() or time.time()
        if heartbeat.timestamp() < kubelet_started - 1:
            return "waiting for the kubelet's first status"
        return None if ready[0]["status"] == "True" else ready[0].get("message", "not Ready")

    def _apply_addons(self) -> None:
        addons = [*build_addons(image_refs()[COREDNS]), *build_network_policy_rbac()]
        manifests = "\n---\n".join(json.dumps(doc) for doc in addons)
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=cryptolake-cluster",
            "-f",
            "-",
            stdin=manifests,
        )

    def _network_policies_ready(self) -> str | None:
        """kube-router answers its health check once its firewall controller synced."""
        url = f"http://{NODE_IP}:{NETWORK_POLICY_HEALTH_PORT}/healthz"
        return probe_url(url, None, lambda body: True)

    def _dns_ready(self) -> str | None:
        """A CoreDNS pod Ready with a container started by this kubelet (a warm start finds
        the old pod's status until the kubelet reports again)."""
        done = self.kubectl(
            "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o", "json", check=False
        )
        if done.returncode != 0:
            return done.stderr.strip()
        kubelet_started = self.daemons["kubelet"].started_at()
        for pod in json.loads(done.stdout)["items"]:
            for container in pod.get("status", {}).get("containerStatuses", []):
                running = container.get("state", {}).get("running")
                if container.get("ready") and running and kubelet_started is not None:
                    started = datetime.fromisoformat(running["startedAt"].replace("Z", "+00:00"))
                    if started.timestamp() >= kubelet_started - 1:
                        return None
        return "CoreDNS not ready yet"

    # --- images ---------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(
            "ctr",
            "--address",
            str(self.files.containerd_socket),
            "--namespace",
            "k8s.io",
            *args,
            check=check,
        )

    def image_present(self, reference: str) -> bool:
        listed = self.ctr("images", "ls", "-q", check=False).stdout.split()
        return reference in listed or f"docker.io/{reference}" in listed

    def import_image(self, reference: str, archive: Path) -> None:
        """``ctr images import`` unless containerd already has this very archive: a marker file
        named after the archive (whose name carries its content key) records the import."""
        marker = self.files.root / "imported" / archive.name
        if marker.exists() and self.image_present(reference):
            return
        began = time.monotonic()
        self.ctr("images", "import", "--no-unpack", str(archive))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        self.progress(f"image {reference}: imported ({time.monotonic() - began:.1f} s)")

    # --- down and status ------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything, the pods' containers included; unmount what the kubelet mounted;
        delete the network namespace. Data stays for the next `up`."""
        began = time.monotonic()
        for name in ("provisioner", "kube-router", "kube-proxy", "kubelet"):
            if self.daemons[name].stop():
                self.progress(f"{name}: stopped")
        if self.daemons["containerd"].pid() is not None:
            self._remove_containers()
        for name in (
            "containerd",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "etcd",
        ):
            if self.daemons[name].stop():
                self.progress(f"{name}: stopped")
        self._kill_leftover_shims()
        self._unmount_under(self.files.root)
        for name in _run("ip", "netns", "list").stdout.split():
            if name.startswith("cni-"):  # the pods' namespaces, made by our CNI calls
                _run("ip", "netns", "del", name, check=False)
        if NETNS in _run("ip", "netns", "list").stdout.split():
            _run("ip", "netns", "del", NETNS)
        _run("ip", "link", "del", HOST_VETH, check=False)
        self.progress(
            f"cluster down in {time.monotonic() - began:.0f} s (state kept in {self.files.root})"
        )

    def _remove_containers(self) -> None:
        """SIGKILL every task; containerd's CRI plugin deletes a task once it exits, so wait
        for the list to empty (``ctr tasks delete`` only for stragglers), then the containers."""
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 15
        while (left := self.ctr("tasks", "ls", "-q", check=False).stdout.split()) and (
            time.monotonic() < deadline
        ):
            for task in left:
                self.ctr("tasks", "delete", task, check=False)
            time.sleep(0.2)
        containers = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        for container in containers:
            self.ctr("containers", "delete", container, check=False)
        if tasks or containers:
            self.progress(f"containers: {len(tasks)} killed, {len(containers)} removed")

    def _kill_leftover_shims(self) -> None:
        """runc shims outlive containerd; ours carry our socket's path in their arguments."""
        marker = str(self.files.containerd_socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)

    def _unmount_under(self, root: Path) -> None:
        prefix = str(root.resolve()) + "/"
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        ours = sorted({m for m in mounts if m.startswith(prefix)}, key=len, reverse=True)
        for mount in ours:
            _run("umount", "-l", mount, check=False)
        if ours:
            self.progress(f"unmounted {len(ours)} mounts under {root}")

    def status(self) -> dict[str, object]:
        daemons = {name: daemon.pid() for name, daemon in self.daemons.items()}
        running = all(pid is not None for pid in daemons.values())
        report: dict[str, object] = {"kubeconfig": str(self.kubeconfig), "daemons": daemons}
        if running:
            report["node"] = self._node_ready() or "Ready"
            pods = self.kubectl("get", "pods", "-A", "--no-headers", check=False).stdout
            report["pods"] = len(pods.splitlines())
        report["up"] = running
        return report
