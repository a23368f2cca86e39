"""``cryptolake-operator``: run the reconciler (``run``), print the CRD (``crd``), or print what
a ``CryptoPipeline`` becomes (``render``, like ``helm template``: no cluster needed)."""

from __future__ import annotations

import argparse
import importlib
import sys

from cryptolake.operator.crd import crd_yaml


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptolake-operator",
        description="Reconcile CryptoPipeline resources (cryptolake.io/v1alpha1) into a broker, "
        "storage, the producer, the Spark jobs and the query API.",
        epilog="Kubernetes access: in-cluster service account, else $KUBECONFIG. Settings: "
        "CRYPTOLAKE_OPERATOR_METRICS_PORT (9402), _KAFKA_IMAGE, "
        "_REDPANDA_IMAGE, _MINIO_IMAGE, _PRODUCER_IMAGE, _JOBS_IMAGE, _API_IMAGE.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeat)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint to serve"
    )
    peering = run.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone", action="store_true", help="no peering (one replica, or tests)"
    )
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object (ClusterKopfPeering, or KopfPeering per watched namespace) "
        "shared by the operator's replicas: one of them handles resources at a time",
    )
    run.add_argument(
        "--log-format",
        choices=["plain", "full", "json"],
        default="plain",
        help="kopf's log format (json for log collectors)",
    )
    commands.add_parser("crd", help="print the CustomResourceDefinition YAML (k8s/crd/)")
    render = commands.add_parser(
        "render",
        help="print every object the operator would create for a CryptoPipeline, without a "
        "cluster (generated credentials are shown with placeholder keys)",
    )
    render.add_argument("-f", "--filename", required=True, type=argparse.FileType("r"),
                        help="the CryptoPipeline YAML ('-': standard input)")  # fmt: skip
    render.add_argument("-n", "--namespace", default="default",
                        help="namespace if the resource names none (default: default)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "crd":
        sys.stdout.write(crd_yaml())
        return 0
    if args.command == "render":
        from cryptolake.operator.render import RenderError, render  # noqa: PLC0415

        try:
            sys.stdout.write(render(args.filename.read(), args.namespace))
        except RenderError as error:
            sys.stderr.write(f"cryptolake-operator render: {error}\n")
            return 2
        return 0

    import kopf  # noqa: PLC0415 (only `run` needs it)

    importlib.import_module("cryptolake.operator.handlers")  # registers the handlers
    kopf.configure(log_format=kopf.LogFormat[args.log_format.upper()])
    kopf.run(
        peering_name=args.peering,
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace or [],
        liveness_endpoint=args.liveness,
        standalone=args.standalone,
    )
    return 0
