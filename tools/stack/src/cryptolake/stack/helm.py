"""Helm and kubectl, built from their Go modules by `make setup`, run against a chart or a
cluster: what the chart tests, `make chart-*` targets and the cluster tier share."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cryptolake.stack.binaries import installed_binary
from cryptolake.stack.jars import TOOLS_DIR

REPO_DIR = TOOLS_DIR.parent
CHART_DIR = REPO_DIR / "charts" / "cryptolake"


class CommandFailed(RuntimeError):
    """helm or kubectl exited non-zero; the message quotes its standard error."""


@dataclass(frozen=True)
class Tool:
    """A command-line program with an optional kubeconfig."""

    binary: Path
    kubeconfig: Path | None = None
    timeout_s: float = 300.0

    def run(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        # Before the arguments: whatever follows `--` (kubectl exec) is the container's.
        cmd = [str(self.binary)]
        if self.kubeconfig is not None:
            cmd += ["--kubeconfig", str(self.kubeconfig)]
        cmd += args
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, check=False, timeout=self.timeout_s
        )
        if check and done.returncode != 0:
            raise CommandFailed(
                f"{self.binary.name} {' '.join(args)} failed (exit {done.returncode}):\n"
                f"{done.stderr.strip()}"
            )
        return done


def helm(kubeconfig: Path | None = None) -> Tool:
    return Tool(installed_binary("helm"), kubeconfig)


def kubectl(kubeconfig: Path | None = None) -> Tool:
    return Tool(installed_binary("kubectl"), kubeconfig)


def template_args(
    values_files: tuple[Path, ...] = (),
    set_values: tuple[str, ...] = (),
    api_versions: tuple[str, ...] = (),
) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for value in set_values:
        args += ["--set", value]
    for version in api_versions:
        args += ["--api-versions", version]
    return args


def render(
    *values_files: Path,
    set_values: tuple[str, ...] = (),
    api_versions: tuple[str, ...] = (),
    release: str = "cryptolake",
    namespace: str = "cryptolake-system",
    include_crds: bool = True,
) -> list[dict[str, Any]]:
    """`helm template` of the chart: its documents, empty ones dropped."""
    args = ["template", release, str(CHART_DIR), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    args += template_args(values_files, set_values, api_versions)
    return [doc for doc in yaml.safe_load_all(helm().run(*args).stdout) if doc]
