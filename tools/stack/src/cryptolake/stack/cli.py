"""``cryptolake-stack``: fetch and build pinned tooling, run the Kafka broker, MinIO or a
Kubernetes control plane, run the local stack."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from cryptolake.stack.binaries import GO_PROGRAMS, BuildFailed, build_program, link_program
from cryptolake.stack.cluster import Cluster, ClusterFailed, cluster_images
from cryptolake.stack.jars import ToolingMissing, resolve_jars
from cryptolake.stack.kafka import BrokerFailed, KafkaBroker, KafkaBrokerConfig
from cryptolake.stack.kube import ControlPlane, ControlPlaneConfig, ControlPlaneFailed
from cryptolake.stack.minio import MinioFailed, MinioServer, MinioServerConfig
from cryptolake.stack.supervisor import StackSettings, run_stack

log = logging.getLogger("cryptolake.stack")

JAR_SETS = ("kafka-broker", "spark-jars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptolake-stack",
        description="CryptoLake's local stack: pinned tooling and the services of `make run`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser(
        "fetch", help="resolve jar sets from Maven Central into the cache (idempotent)"
    )
    fetch.add_argument(
        "names",
        nargs="*",
        default=list(JAR_SETS),
        metavar="NAME",
        help=f"jar sets (default: all of {', '.join(JAR_SETS)})",
    )
    build = commands.add_parser(
        "build", help="build programs from their Go modules into the cache (idempotent)"
    )
    build.add_argument(
        "names",
        nargs="*",
        default=list(GO_PROGRAMS),
        metavar="NAME",
        help=f"programs (default: all of {', '.join(GO_PROGRAMS)})",
    )
    build.add_argument(
        "--link",
        type=Path,
        metavar="DIR",
        help="also symlink DIR/<name> to each built program (make setup: .venv/bin, so "
        ".venv/bin/helm and .venv/bin/kubectl work)",
    )
    kafka = commands.add_parser("kafka", help="run only the Kafka broker in the foreground")
    kafka.add_argument("--data-dir", type=Path, default=Path(".local/kafka"))
    kafka.add_argument("--port", type=int, default=9092)
    kafka.add_argument("--controller-port", type=int, default=9093)
    minio = commands.add_parser("minio", help="run only MinIO (S3) in the foreground")
    minio.add_argument("--data-dir", type=Path, default=Path(".local/minio"))
    minio.add_argument("--port", type=int, default=9000)
    minio.add_argument(
        "--console-port", type=int, default=None, help="also serve the web console on this port"
    )
    kube = commands.add_parser(
        "kube",
        help="run only a Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager; no node) in the foreground",
    )
    kube.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".local/kube"),
        help="etcd data, credentials, logs and the kubeconfig (credentials are new each start)",
    )
    kube.add_argument("--port", type=int, default=6443, help="the API server's HTTPS port")
    kube.add_argument("--etcd-port", type=int, default=2379, help="etcd's client port")
    kube.add_argument("--etcd-peer-port", type=int, default=2380)
    kube.add_argument("--controller-manager-port", type=int, default=10257)
    images = commands.add_parser(
        "images",
        help="build the project's images offline (debootstrap base, buildah) into OCI archives "
        "in the cache, incrementally; with a running local cluster, import them",
    )
    images.add_argument("names", nargs="*", metavar="NAME", help="images (default: all)")
    cluster = commands.add_parser(
        "cluster",
        help="a real single-node Kubernetes cluster in the `cryptolake` network namespace "
        "(root; state in $CRYPTOLAKE_CLUSTER_DIR, default /var/lib/cryptolake/cluster)",
    )
    cluster.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start what is not running, import the images, wait for the node and DNS; "
        "down: stop everything, pods included (data kept); status: what runs",
    )
    cluster.add_argument(
        "--images",
        action="store_true",
        help="up: also build (make images) and import the project's images",
    )
    cluster.add_argument("--json", action="store_true", help="status: JSON")
    commands.add_parser(
        "run",
        help="the local stack: Kafka broker, the producer and the Spark jobs "
        "(env: CRYPTOLAKE_SOURCE, CRYPTOLAKE_STATE_DIR, CRYPTOLAKE_KAFKA_PORT, "
        "CRYPTOLAKE_RUN_JOBS)",
    )
    return parser


def _run_kafka(args: argparse.Namespace) -> int:
    broker = KafkaBroker(
        KafkaBrokerConfig(
            data_dir=args.data_dir.resolve(), port=args.port, controller_port=args.controller_port
        )
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with broker:
        print(f"kafka ready on {broker.bootstrap_servers}; Ctrl-C stops it", flush=True)
        stop.wait()
    return 0


def _run_minio(args: argparse.Namespace) -> int:
    server = MinioServer(
        MinioServerConfig(
            data_dir=args.data_dir.resolve(), port=args.port, console_port=args.console_port
        )
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(
            f"minio ready on {server.endpoint} (access key {server.access_key}, secret key "
            f"{server.secret_key}); Ctrl-C stops it",
            flush=True,
        )
        stop.wait()
    return 0


def _run_images(args: argparse.Namespace) -> int:
    from cryptolake.stack.images import build_images  # noqa: PLC0415

    archives = build_images(args.names or None)
    cluster = Cluster()
    running = cluster.daemons["containerd"].pid() is not None
    for archive in archives.values():
        if running:
            cluster.import_image(archive.reference, archive.path)
        print(f"{archive.reference} {archive.path}", flush=True)
    if not running:
        print("(the local cluster is not running: `make cluster-up` imports them)", flush=True)
    return 0


def _run_cluster(args: argparse.Namespace) -> int:
    cluster = Cluster()
    if args.action == "up":
        cluster.up(cluster_images(build=args.images))
        print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
    elif args.action == "down":
        cluster.down()
    else:
        report = cluster.status()
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for key, value in report.items():
                print(f"{key}: {value}")
        return 0 if report["up"] else 1
    return 0


def _run_kube(args: argparse.Namespace) -> int:
    control_plane = ControlPlane(
        ControlPlaneConfig(
            data_dir=args.data_dir.resolve(),
            apiserver_port=args.port,
            etcd_client_port=args.etcd_port,
            etcd_peer_port=args.etcd_peer_port,
            controller_manager_port=args.controller_manager_port,
        )
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with control_plane:
        print(
            f"kubernetes control plane ready on {control_plane.server} (logs in "
            f"{control_plane.files.root}); Ctrl-C stops it. In another shell:\n"
            f"export KUBECONFIG={control_plane.kubeconfig}",
            flush=True,
        )
        stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s stack: %(message)s")
    try:
        if args.command == "fetch":
            for name in args.names:
                resolve_jars(name)
            return 0
        if args.command == "build":
            for name in args.names:
                built = build_program(name)
                if args.link is not None:
                    link_program(built, args.link / name)
            return 0
        if args.command == "kafka":
            return _run_kafka(args)
        if args.command == "minio":
            return _run_minio(args)
        if args.command == "kube":
            return _run_kube(args)
        if args.command == "cluster":
            return _run_cluster(args)
        if args.command == "images":
            return _run_images(args)
        return run_stack(StackSettings())
    except (
        ToolingMissing,
        BrokerFailed,
        BuildFailed,
        MinioFailed,
        ControlPlaneFailed,
        ClusterFailed,
    ) as exc:
        log.error("%s", exc)
        return 2
    except ValidationError as exc:
        log.error("bad CRYPTOLAKE_* setting: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
