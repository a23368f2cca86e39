"""``cryptolake-operator``: print the CRD (``crd``); the reconciler comes with the handlers."""

from __future__ import annotations

import argparse
import sys

from cryptolake.operator.crd import crd_yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cryptolake-operator",
        description="The CryptoPipeline operator's tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("crd", help="print the CustomResourceDefinition YAML (k8s/crd/)")
    args = parser.parse_args(argv)
    if args.command == "crd":
        sys.stdout.write(crd_yaml())
    return 0
