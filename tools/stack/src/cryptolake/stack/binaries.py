"""Third-party programs built from their Go modules (wrapper modules in ``tools/go/<folder>/``)
into ``$CRYPTOLAKE_CACHE/bin/<name>-<version>``: a version bump builds anew, a warm machine skips
the build. Go's own build and module caches (GOCACHE, GOMODCACHE) stay where Go keeps them, so even
a new version rebuilds only what changed."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptolake.common.settings import cache_root
from cryptolake.stack.jars import TOOLS_DIR, ToolingMissing

log = logging.getLogger(__name__)

GO_DIR = TOOLS_DIR / "go"
PROGRESS_EVERY_S = 15.0

_PSEUDO_VERSION = re.compile(r"^v\d+\.\d+\.\d+-(?:\d+\.)?(\d{14})-([0-9a-f]{12})$")


class BuildFailed(RuntimeError):
    """``go build`` failed; the message quotes the compiler's last lines."""


@dataclass(frozen=True)
class GoProgram:
    name: str  # the binary's name
    module: str  # the module whose version (in tools/go/<folder>/go.mod) keys the cache
    package: str  # the main package to build
    # (version, the version's publication time on the module proxy) → linker flags
    ldflags: Callable[[str, datetime], list[str]]
    folder: str = ""  # the wrapper module under tools/go/ (default: name); may hold several

    @property
    def module_dir(self) -> Path:
        return GO_DIR / (self.folder or self.name)


def module_version(go_mod: str, module: str) -> str:
    """The version of ``module`` that a go.mod text requires."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod, re.MULTILINE)
    if match is None:
        raise ToolingMissing(f"go.mod does not require {module}")
    return match.group(1)


def pseudo_version_time_and_commit(version: str) -> tuple[datetime, str]:
    """Commit time and short hash of a pseudo-version such as
    ``v0.0.0-20260212201848-7aac2a2c5b7c``."""
    match = _PSEUDO_VERSION.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a Go pseudo-version (vX.Y.Z-yyyymmddhhmmss-commit)")
    stamp, commit = match.groups()
    return datetime.strptime(stamp + "+0000", "%Y%m%d%H%M%S%z"), commit


def minio_ldflags(version: str, _published: datetime | None = None) -> list[str]:
    """The version stamps MinIO's own release build sets (buildscripts/gen-ldflags.go).

    MinIO's release tags (RELEASE.2025-…) are not semver, so the Go module proxy serves its
    commits as pseudo-versions; the commit time stands in for the release time.
    """
    released, commit = pseudo_version_time_and_commit(version)
    stamps = {
        "Version": released.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ReleaseTag": "DEVELOPMENT." + released.strftime("%Y-%m-%dT%H-%M-%SZ"),
        "CommitID": commit,
        "ShortCommitID": commit,
        "CopyrightYear": str(released.year),
    }
    # -s -w: no symbol table or DWARF, as upstream ships it (half the size, faster link).
    return [
        "-s",
        "-w",
        *(f"-X github.com/minio/minio/cmd.{key}={value}" for key, value in stamps.items()),
    ]


def etcd_ldflags(version: str, _published: datetime | None = None) -> list[str]:
    """etcd's ./build stamps only the git hash (api/v3/version.GitSHA), which a module zip does
    not carry; the release version is a constant in the source, so nothing else to set."""
    return ["-s", "-w"]


def kubernetes_ldflags(version: str, published: datetime) -> list[str]:
    """The stamps of Kubernetes' hack/lib/version.sh. Without them the binaries report
    v0.0.0-master, which fails every version check (Helm ``kubeVersion``, client skew).

    The module zip has no git metadata, so gitCommit stays empty (as in upstream's unstamped
    builds) and buildDate is the tag's publication time on the module proxy.
    """
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if match is None:
        raise ValueError(f"{version!r} is not a Kubernetes release version (vX.Y.Z)")
    major, minor = match.groups()
    stamps = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": published.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return [
        "-s",
        "-w",
        *(
            f"-X {package}.{key}={value}"
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for key, value in stamps.items()
        ),
    ]


def helm_ldflags(version: str, _published: datetime | None = None) -> list[str]:
    """The stamps of Helm's Makefile: its own version, and the Kubernetes version that
    ``helm template`` and ``helm lint`` assume without a cluster (one minor above client-go's
    v0.MINOR, as upstream derives it). Without them Helm reports ``main`` and assumes 1.20."""
    client_go = module_version((GO_DIR / "helm" / "go.mod").read_text(), "k8s.io/client-go")
    match = re.fullmatch(r"v0\.(\d+)\.\d+", client_go)
    if match is None:
        raise ValueError(f"k8s.io/client-go {client_go!r} is not a v0.MINOR.PATCH release")
    kube_minor = match.group(1)
    stamps = {
        "helm.sh/helm/v3/internal/version.version": version,
        "helm.sh/helm/v3/internal/version.gitTreeState": "clean",
        **{
            f"helm.sh/helm/v3/pkg/{package}.k8sVersion{part}": value
            for package in ("chartutil", "lint/rules")
            for part, value in (("Major", "1"), ("Minor", kube_minor))
        },
    }
    return ["-s", "-w", *(f"-X {key}={value}" for key, value in stamps.items())]


def prometheus_ldflags(version: str, published: datetime) -> list[str]:
    """The stamps of Prometheus' promu build: module v0.316.0 is Prometheus 3.16.0."""
    combined, _, patch = version.removeprefix("v0.").partition(".")
    release = f"{int(combined) // 100}.{int(combined) % 100}.{patch}"
    stamps = {"Version": release, "BuildDate": published.strftime("%Y%m%d-%H:%M:%S")}
    package = "github.com/prometheus/common/version"
    return ["-s", "-w", *(f"-X {package}.{key}={value}" for key, value in stamps.items())]


GO_PROGRAMS: dict[str, GoProgram] = {
    "minio": GoProgram(
        name="minio",
        module="github.com/minio/minio",
        package="github.com/minio/minio",
        ldflags=minio_ldflags,
    ),
    "etcd": GoProgram(
        name="etcd",
        module="go.etcd.io/etcd/server/v3",
        # In 3.6 the `etcd` binary is the server module's root package (server/main.go).
        package="go.etcd.io/etcd/server/v3",
        ldflags=etcd_ldflags,
    ),
    **{
        name: GoProgram(
            name=name,
            module="k8s.io/kubernetes",
            package=f"k8s.io/kubernetes/cmd/{name}",
            ldflags=kubernetes_ldflags,
            folder="kubernetes",
        )
        for name in (
            "kube-apiserver",
            "kube-controller-manager",
            "kubectl",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
        )
    },
    "coredns": GoProgram(
        name="coredns",
        module="github.com/coredns/coredns",
        # The binary is the module's root package (coredns.go).
        package="github.com/coredns/coredns",
        ldflags=lambda version, _published: ["-s", "-w"],
    ),
    # NetworkPolicy enforcement for the local cluster: kube-router's firewall alone (iptables
    # and ipset; its routing and service proxy stay off). kube-network-policies would be the
    # lighter choice, but it needs the nftables `queue` expression, which kernels without
    # CONFIG_NFT_QUEUE (and without modules) lack.
    "kube-router": GoProgram(
        name="kube-router",
        module="github.com/cloudnativelabs/kube-router/v2",
        package="github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
        ldflags=lambda version, _published: [
            "-s",
            "-w",
            f"-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={version}",
        ],
    ),
    # `promtool check rules` / `test rules` for the chart's PrometheusRule (rules/*.yaml).
    "promtool": GoProgram(
        name="promtool",
        module="github.com/prometheus/prometheus",
        package="github.com/prometheus/prometheus/cmd/promtool",
        ldflags=prometheus_ldflags,
    ),
    "helm": GoProgram(
        name="helm",
        module="helm.sh/helm/v3",
        package="helm.sh/helm/v3/cmd/helm",
        ldflags=helm_ldflags,
    ),
}


def go_program(name: str) -> GoProgram:
    try:
        return GO_PROGRAMS[name]
    except KeyError:
        raise ToolingMissing(
            f"no Go program {name!r}; known: {', '.join(sorted(GO_PROGRAMS))}"
        ) from None


def program_version(program: GoProgram) -> str:
    go_mod = program.module_dir / "go.mod"
    if not go_mod.is_file():
        raise ToolingMissing(f"{go_mod} is missing: the checkout is incomplete")
    return module_version(go_mod.read_text(), program.module)


def binary_path(name: str) -> Path:
    """Where program ``name`` of the pinned version lives in the cache (it may not be built)."""
    program = go_program(name)
    return cache_root() / "bin" / f"{program.name}-{program_version(program)}"


def installed_binary(name: str) -> Path:
    """The built program ``name``; raises ToolingMissing when setup has not built it."""
    path = binary_path(name)
    if not os.access(path, os.X_OK):
        raise ToolingMissing(f"{name} binary missing ({path}): run `make setup`")
    return path


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolingMissing(
            "Go is not on PATH: install Go 1.24 or newer (these machines have it in "
            "/usr/local/go/bin; Debian's golang-go is too old)"
        )
    return go


def build_program(name: str) -> Path:
    """Build program ``name`` at its pinned version into the cache (idempotent)."""
    program = go_program(name)
    target = binary_path(name)
    if os.access(target, os.X_OK):
        log.info("%s: cached in %s", name, target)
        return target
    go = _go()
    version = program_version(program)
    # CGO off: a static binary, as upstream ships it, and no C compiler in the build.
    env = {**os.environ, "CGO_ENABLED": "0"}
    started = time.monotonic()
    log.info("%s %s: listing packages (downloads modules on first use)…", name, version)
    listed = _go_output(go, program, env, "list", "-mod=readonly", "-deps", program.package)
    packages = set(listed.split())
    log.info(
        "%s %s: building %d packages into %s (first run: minutes; Go caches the rest)…",
        name,
        version,
        len(packages),
        target,
    )
    staging = target.with_name(target.name + ".partial")
    staging.parent.mkdir(parents=True, exist_ok=True)
    published = _published(go, program, version, env)
    _go_build(
        go,
        program,
        ldflags=program.ldflags(version, published),
        output=staging,
        env=env,
        packages=packages,
    )
    staging.replace(target)
    log.info("%s %s: built in %.0f s", name, version, time.monotonic() - started)
    return target


def link_program(binary: Path, link: Path) -> None:
    """Point ``link`` at ``binary`` (replacing an older link: a version bump moves it)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.readlink() == binary:
        return
    staging = link.with_name(f".{link.name}.link")
    staging.unlink(missing_ok=True)
    staging.symlink_to(binary)
    staging.replace(link)


def _go_output(go: str, program: GoProgram, env: dict[str, str], *args: str) -> str:
    """Standard output of ``go ARGS`` in the program's wrapper module; BuildFailed quoting
    its standard error otherwise."""
    done = subprocess.run(
        [go, *args], cwd=program.module_dir, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BuildFailed(f"go {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def _published(go: str, program: GoProgram, version: str, env: dict[str, str]) -> datetime:
    """When ``version`` of the program's module was published (the proxy's .info ``Time``;
    the download is already in the module cache by then)."""
    listed = _go_output(go, program, env, "mod", "download", "-json", f"{program.module}@{version}")
    info = json.loads(Path(json.loads(listed)["Info"]).read_text())
    return datetime.fromisoformat(info["Time"])


def _go_build(
    go: str,
    program: GoProgram,
    *,
    ldflags: list[str],
    output: Path,
    env: dict[str, str],
    packages: set[str],
) -> None:
    """``go build -v`` with a progress line every PROGRESS_EVERY_S (it names each package it
    compiles on stderr); anything else it prints is kept for the error message."""
    cmd = [
        go,
        "build",
        "-v",
        "-mod=readonly",
        # No local paths in the binary, so the same inputs give the same bytes anywhere.
        "-trimpath",
        "-ldflags",
        " ".join(ldflags),
        "-o",
        str(output),
        program.package,
    ]
    started = time.monotonic()
    compiled = 0
    other: deque[str] = deque(maxlen=40)
    done = threading.Event()

    def report() -> None:
        # A thread, since the last packages and the link run for a minute without a line.
        while not done.wait(PROGRESS_EVERY_S):
            log.info(
                "%s: compiled %d of up to %d packages (%.0f s)",
                program.name,
                compiled,
                len(packages),
                time.monotonic() - started,
            )

    reporter = threading.Thread(target=report, name=f"build-{program.name}", daemon=True)
    reporter.start()
    try:
        with subprocess.Popen(
            cmd, cwd=program.module_dir, env=env, stderr=subprocess.PIPE, text=True
        ) as process:
            for line in process.stderr or ():
                text = line.rstrip()
                if text in packages:
                    compiled += 1
                elif text:
                    other.append(text)
    finally:
        done.set()
        reporter.join()
    if process.returncode != 0:
        output.unlink(missing_ok=True)
        details = "\n".join(other) or "(no output)"
        raise BuildFailed(
            f"go build {program.package} failed (exit {process.returncode}); if it needs a newer "
            f"Go, set GOTOOLCHAIN=go1.N.M (toolchains come from the module proxy):\n{details}"
        )
