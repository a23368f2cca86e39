"""The project's container images, built offline with buildah into OCI archives
(``$CRYPTOLAKE_CACHE/images/<name>-<key>.tar``) for ``ctr images import``: ``make images``.

Nothing is pulled from a registry. Two Debian bookworm bases come from debootstrap (the Debian
mirror is the only network they need); the components build from their committed Dockerfiles
with ``--build-arg BASE_IMAGE=<a base>``; the Kafka broker, MinIO, the pod sandbox ("pause")
and CoreDNS images are assembled from what ``make setup`` built or resolved (generated
Dockerfiles in a staging context).

Each archive's name carries a content key: a sha256 over everything the image is made of (the
Dockerfile, every file it copies from the build context, build arguments, the key of its base).
A warm machine finds every archive and builds nothing; a change rebuilds only the images whose
inputs changed (and buildah's layer cache keeps the unchanged steps of those).

Pure functions first (specs, Dockerfile and .dockerignore parsing, keys); buildah, debootstrap
and the file system below.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptolake.common.settings import cache_root
from cryptolake.stack import binaries, kafka_container
from cryptolake.stack.jars import TOOLS_DIR, ToolingMissing, resolved_jars_dir

log = logging.getLogger(__name__)

REPO_DIR = TOOLS_DIR.parent
IMAGES_DIR = TOOLS_DIR / "images"
REGISTRY = "localhost/cryptolake"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# The host's extra CAs (a TLS-intercepting proxy's): trusted in the bases too, so pip and uv
# reach PyPI from inside builds as they do on the host.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
KEY_LABEL = "io.cryptolake.image.key"
# Part of every key: bump it when the way images are made changes, to rebuild them all.
RECIPE_VERSION = "1"
PROGRESS_EVERY_S = 30.0
# Below this much free space where buildah keeps images, a run that built something prunes the
# images no tag needs any more (replaced builds; the layer cache of current ones stays).
MIN_FREE_BYTES = 15 * 10**9
BUILDAH_STORAGE = Path("/var/lib/containers/storage")
NON_ROOT = "10001:10001"

# name → reference. The component refs are the operator's defaults
# (cryptolake.operator.builders.Images; a test keeps them equal).
IMAGE_REFS: Final[dict[str, str]] = {
    "base": f"{REGISTRY}/base:{SUITE}",
    "base-java": f"{REGISTRY}/base-java:{SUITE}",
    "spark-jars": f"{REGISTRY}/spark-jars:local",
    "producer": f"{REGISTRY}/producer:0.1.0",
    "api": f"{REGISTRY}/api:0.1.0",
    "operator": f"{REGISTRY}/operator:0.1.0",
    "jobs": f"{REGISTRY}/jobs:0.1.0",
    "kafka": f"{REGISTRY}/kafka:4.1.1",
    "minio": f"{REGISTRY}/minio:latest",
    "pause": f"{REGISTRY}/pause:3.10",
}
COREDNS = "coredns"  # its tag is the Go module's version: see image_refs()
# What a cluster needs whatever it runs: the pod sandbox and the cluster DNS.
CLUSTER_IMAGES: Final[tuple[str, ...]] = ("pause", COREDNS)
# Built by default (build_images()): what pods run. The rest are build inputs.
DEFAULT_IMAGES: Final[tuple[str, ...]] = (
    "producer",
    "api",
    "operator",
    "jobs",
    "kafka",
    "minio",
    *CLUSTER_IMAGES,
)

BASE_PACKAGES: Final[tuple[str, ...]] = (
    "ca-certificates",
    "python3",
    # pip and venv as the python images have them: Dockerfiles may use either.
    "python3-pip",
    "python3-venv",
)
JAVA_PACKAGES: Final[tuple[str, ...]] = (*BASE_PACKAGES, "openjdk-17-jre-headless", "procps")


class ImageBuildFailed(RuntimeError):
    """A build step failed; the message names the image and the step and quotes its output."""


# --- specs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Debootstrap:
    """A Debian root file system made by debootstrap, committed as a one-layer image."""

    packages: tuple[str, ...]
    suite: str = SUITE
    mirror: str = MIRROR
    variant: str = "minbase"


@dataclass(frozen=True)
class FromDockerfile:
    """A committed Dockerfile, built with the repository root as context."""

    dockerfile: str  # relative to the repository
    base: str  # image name, passed as BASE_IMAGE
    image_args: tuple[tuple[str, str], ...] = ()  # (build argument, image name)


@dataclass(frozen=True)
class Generated:
    """A generated Dockerfile (``{base}`` is the base's reference) over a staging context made
    from ``inputs()``: context name → file. ``stage`` fills the context (default: the inputs
    under their names); the inputs' contents key the image."""

    dockerfile: str
    inputs: Callable[[], dict[str, Path]]
    base: str | None = None  # image name; None: FROM scratch
    stage: Callable[[dict[str, Path], Path], None] | None = None


Recipe = Debootstrap | FromDockerfile | Generated


@dataclass(frozen=True)
class ImageSpec:
    name: str
    reference: str
    recipe: Recipe

    @property
    def dependencies(self) -> tuple[str, ...]:
        recipe = self.recipe
        if isinstance(recipe, FromDockerfile):
            return (recipe.base, *(image for _, image in recipe.image_args))
        if isinstance(recipe, Generated) and recipe.base is not None:
            return (recipe.base,)
        return ()


@dataclass(frozen=True)
class ImageArchive:
    """An image in an OCI archive: ``ctr -n k8s.io images import <path>`` names it
    ``reference``."""

    name: str
    reference: str
    path: Path
    key: str


SPARK_JARS_DOCKERFILE = """\
# The jars of tools/maven/spark-jars that `make setup` resolved, for jobs/Dockerfile's JARS_IMAGE.
FROM scratch
COPY jars/ /opt/spark-jars/
"""

KAFKA_DOCKERFILE = """\
# Apache Kafka in KRaft mode, as the operator runs apache/kafka: /etc/kafka/docker/run turns
# KAFKA_* variables into server.properties, formats the storage once and starts the broker.
FROM {base}
COPY libs/ /opt/kafka/libs/
COPY --chmod=755 run /etc/kafka/docker/run
RUN useradd --uid 10001 --user-group --home-dir /opt/kafka --no-create-home \\
        --shell /usr/sbin/nologin kafka \\
    && mkdir -p /opt/kafka/config /var/lib/kafka/data \\
    && chown 10001:10001 /opt/kafka/config /var/lib/kafka/data
ENV KAFKA_HOME=/opt/kafka
WORKDIR /opt/kafka
USER 10001:10001
VOLUME /var/lib/kafka/data
EXPOSE 9092 9093
CMD ["/etc/kafka/docker/run"]
"""

MINIO_DOCKERFILE = """\
# MinIO from the binary `make setup` built (tools/images/minio/Dockerfile compiles it instead).
FROM {base}
COPY --chmod=755 minio /usr/local/bin/minio
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin minio
USER 10001:10001
EXPOSE 9000
ENTRYPOINT ["minio"]
"""

PAUSE_DOCKERFILE = """\
# The pod sandbox: tools/images/pause/pause.c, static, alone (as registry.k8s.io/pause).
FROM scratch
COPY --chmod=755 pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
"""

COREDNS_DOCKERFILE = """\
# CoreDNS from the binary `make setup` built (a static Go program).
FROM scratch
COPY --chmod=755 coredns /coredns
EXPOSE 53 53/udp
ENTRYPOINT ["/coredns"]
"""

PAUSE_CFLAGS: Final[tuple[str, ...]] = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")


def _jar_inputs(jar_set: str, folder: str) -> Callable[[], dict[str, Path]]:
    def inputs() -> dict[str, Path]:
        jars = resolved_jars_dir(jar_set)
        return {f"{folder}/{jar.name}": jar for jar in sorted(jars.glob("*.jar"))}

    return inputs


def _kafka_inputs() -> dict[str, Path]:
    return {**_jar_inputs("kafka-broker", "libs")(), "run": Path(kafka_container.__file__)}


def _binary_inputs(program: str) -> Callable[[], dict[str, Path]]:
    return lambda: {program: binaries.installed_binary(program)}


def _pause_inputs() -> dict[str, Path]:
    return {"pause.c": IMAGES_DIR / "pause" / "pause.c"}


def image_specs() -> dict[str, ImageSpec]:
    """Every image, by name (CoreDNS only if its Go program is known to binaries.py)."""
    recipes: dict[str, Recipe] = {
        "base": Debootstrap(BASE_PACKAGES),
        "base-java": Debootstrap(JAVA_PACKAGES),
        "spark-jars": Generated(SPARK_JARS_DOCKERFILE, _jar_inputs("spark-jars", "jars")),
        "producer": FromDockerfile("producer/Dockerfile", "base"),
        "api": FromDockerfile("api/Dockerfile", "base"),
        "operator": FromDockerfile("operator/Dockerfile", "base"),
        "jobs": FromDockerfile("jobs/Dockerfile", "base-java", (("JARS_IMAGE", "spark-jars"),)),
        "kafka": Generated(KAFKA_DOCKERFILE, _kafka_inputs, base="base-java"),
        "minio": Generated(MINIO_DOCKERFILE, _binary_inputs("minio"), base="base"),
        "pause": Generated(PAUSE_DOCKERFILE, _pause_inputs, stage=compile_pause),
    }
    specs = {name: ImageSpec(name, IMAGE_REFS[name], recipe) for name, recipe in recipes.items()}
    if COREDNS in binaries.GO_PROGRAMS:
        specs[COREDNS] = ImageSpec(
            COREDNS,
            image_refs()[COREDNS],
            Generated(COREDNS_DOCKERFILE, _binary_inputs(COREDNS)),
        )
    return specs


def image_refs() -> dict[str, str]:
    """IMAGE_REFS plus CoreDNS, tagged with the version of tools/go/coredns (``v1.14.7``)."""
    refs = dict(IMAGE_REFS)
    if COREDNS in binaries.GO_PROGRAMS:
        version = binaries.program_version(binaries.go_program(COREDNS))
        refs[COREDNS] = f"{REGISTRY}/{COREDNS}:{version}"
    return refs


def build_order(wanted: Iterable[str], specs: Mapping[str, ImageSpec]) -> list[str]:
    """``wanted`` and their dependencies, each after what it depends on."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in specs:
            raise ToolingMissing(f"no image {name!r}; known: {', '.join(sorted(specs))}")
        if name in visiting:
            raise ValueError(f"image dependency cycle through {name}")
        visiting.add(name)
        for dependency in specs[name].dependencies:
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


# --- keys -----------------------------------------------------------------------------------


def content_key(items: Iterable[tuple[str, str]]) -> str:
    """sha256 over (label, value) pairs, independent of their order."""
    digest = hashlib.sha256()
    for label, value in sorted(items):
        for part in (label, value):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return digest.hexdigest()


def debootstrap_key(recipe: Debootstrap, ca_certs: Mapping[str, str]) -> str:
    """Suite, mirror, variant and packages, and the digests of the host CAs baked in."""
    return content_key(
        [
            ("recipe", RECIPE_VERSION),
            ("suite", recipe.suite),
            ("mirror", recipe.mirror),
            ("variant", recipe.variant),
            ("packages", " ".join(sorted(recipe.packages))),
            *((f"ca:{name}", digest) for name, digest in ca_certs.items()),
        ]
    )


def build_key(
    dockerfile: str,
    files: Mapping[str, str],
    *,
    image_args: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The key of a Dockerfile build: its text, the digests of the context files it copies
    (path → digest), and the keys of the images its build arguments name."""
    return content_key(
        [
            ("recipe", RECIPE_VERSION),
            ("dockerfile", dockerfile),
            *((f"file:{path}", digest) for path, digest in files.items()),
            *((f"image-arg:{arg}", key) for arg, key in (image_args or {}).items()),
            *((f"extra:{label}", value) for label, value in (extra or {}).items()),
        ]
    )


def archive_name(name: str, key: str) -> str:
    return f"{name}-{key[:16]}.tar"


def _instructions(dockerfile: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    pending = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        instruction, _, arguments = text.partition(" ")
        yield instruction.upper(), arguments.strip()
    if pending:
        instruction, _, arguments = pending.strip().partition(" ")
        yield instruction.upper(), arguments.strip()


def copied_sources(dockerfile: str) -> list[str]:
    """The build-context paths that COPY and ADD instructions read (not ``--from`` ones)."""
    sources: list[str] = []
    for instruction, arguments in _instructions(dockerfile):
        if instruction not in {"COPY", "ADD"}:
            continue
        flags = re.match(r"^(?:--\S+\s+)*", arguments)
        rest = arguments[flags.end() if flags else 0 :].strip()
        if flags and "--from" in flags.group(0):
            continue
        paths = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        sources += [path for path in paths[:-1] if "://" not in path]
    return sources


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore lines as (exception, regex); later lines win, ``!`` re-includes, a
    matched folder excludes what is under it, ``**`` spans folders."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        patterns.append((exception, re.compile(_glob_regex(pattern))))
    return patterns


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "^" + "".join(out) + "(?:/.*)?$"


def is_ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for exception, regex in patterns:
        if regex.match(path):
            ignored = not exception
    return ignored


# --- files and their digests ----------------------------------------------------------------


@dataclass
class Digests:
    """sha256 of files, remembered across runs by (size, mtime, inode): a warm run reads no
    file twice (the Spark jars alone are over 600 MB)."""

    store: Path
    known: dict[str, list[int | str]] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def load(cls, store: Path) -> Digests:
        try:
            known = json.loads(store.read_text())
        except (OSError, ValueError):
            known = {}
        return cls(store, known if isinstance(known, dict) else {})

    def of(self, path: Path) -> str:
        stat = path.stat()
        stamp: list[int | str] = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self.known.get(str(path))
        if entry is not None and entry[:3] == stamp:
            return str(entry[3])
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        # The executable bit is content too: COPY keeps it.
        value = digest.hexdigest() + ("+x" if os.access(path, os.X_OK) else "")
        self.known[str(path)] = [*stamp, value]
        self.changed = True
        return value

    def save(self) -> None:
        if self.changed:
            staging = self.store.with_name(self.store.name + ".partial")
            staging.write_text(json.dumps(self.known))
            staging.replace(self.store)
            self.changed = False


def context_files(
    context: Path, sources: list[str], patterns: list[tuple[bool, re.Pattern[str]]]
) -> list[str]:
    """The files under ``sources`` that a build with ``context`` sends (not .dockerignored):
    git's tracked and untracked-but-not-ignored files, else a walk of the folders."""
    if not sources:
        return []
    listed = subprocess.run(
        ["git", "-C", str(context), "ls-files", "-z", "--cached", "--others",
         "--exclude-standard", "--", *sources],
        capture_output=True,
        check=False,
    )  # fmt: skip
    if listed.returncode == 0:
        paths = [p for p in listed.stdout.decode().split("\0") if p]
    else:
        paths = []
        for source in sources:
            root = context / source
            if root.is_file():
                paths.append(source)
            for folder, _dirs, files in os.walk(root):
                paths += [(Path(folder) / f).relative_to(context).as_posix() for f in files]
    return sorted({p for p in paths if (context / p).is_file() and not is_ignored(p, patterns)})


def dockerfile_build_key(
    context: Path, dockerfile: str, digests: Digests, image_args: Mapping[str, str]
) -> str:
    """The key of building ``context/dockerfile``: the Dockerfile, .dockerignore, every file
    its COPY and ADD send, and the keys of the images that ``image_args`` name."""
    text = (context / dockerfile).read_text()
    ignore = context / ".dockerignore"
    ignore_text = ignore.read_text() if ignore.exists() else ""
    paths = context_files(context, copied_sources(text), dockerignore_patterns(ignore_text))
    files = {path: digests.of(context / path) for path in paths}
    return build_key(text, files, image_args=image_args, extra={"dockerignore": ignore_text})


# --- running commands -----------------------------------------------------------------------


class _Progress:
    """Logs each step of one image as it starts, with the seconds since the image began, and a
    reminder every PROGRESS_EVERY_S while a step runs."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.began = time.monotonic()
        self.step = "starting"
        self.step_began = self.began

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def start(self, step: str) -> None:
        self.step, self.step_began = step, time.monotonic()
        log.info("%s: %s (%.1f s)", self.image, step, self.elapsed())

    def still(self) -> None:
        log.info(
            "%s: still at %s (%.0f s in it, %.0f s in all)",
            self.image,
            _shorten(self.step),
            time.monotonic() - self.step_began,
            self.elapsed(),
        )


def _shorten(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_BUD_STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: .*|^COMMIT\b.*")


def _stream(
    cmd: list[str],
    progress: _Progress,
    *,
    step_of: Callable[[str], str | None] = lambda _line: None,
    env: Mapping[str, str] | None = None,
    what: str = "",
) -> list[str]:
    """Run ``cmd``, its output merged; lines that ``step_of`` names start a step. Returns the
    output; ImageBuildFailed with its last lines if it fails."""
    tail: deque[str] = deque(maxlen=60)
    lines: list[str] = []
    done = threading.Event()

    def remind() -> None:
        while not done.wait(PROGRESS_EVERY_S):
            progress.still()

    reminder = threading.Thread(target=remind, name=f"progress-{progress.image}", daemon=True)
    reminder.start()
    try:
        with subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=None if env is None else dict(env),
        ) as process:
            for line in process.stdout or ():
                text = line.rstrip()
                tail.append(text)
                lines.append(text)
                step = step_of(text)
                if step is not None:
                    progress.start(step)
                else:
                    log.debug("%s: %s", progress.image, text)
    except FileNotFoundError as exc:
        raise ToolingMissing(f"{cmd[0]} is not installed: {_install_hint(cmd[0])}") from exc
    finally:
        done.set()
        reminder.join()
    if process.returncode != 0:
        output = "\n".join(tail) or "(no output)"
        raise ImageBuildFailed(
            f"{progress.image}: {what or shlex.join(cmd[:3])} failed (exit "
            f"{process.returncode}) at {progress.step!r}:\n{output}"
        )
    return lines


def _run(cmd: list[str], *, what: str, image: str) -> str:
    """A quick command: its standard output, or ImageBuildFailed quoting standard error."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ToolingMissing(f"{cmd[0]} is not installed: {_install_hint(cmd[0])}") from exc
    if done.returncode != 0:
        raise ImageBuildFailed(
            f"{image}: {what} failed (exit {done.returncode}): {shlex.join(cmd)}\n"
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def _install_hint(program: str) -> str:
    packages = {"buildah": "buildah", "debootstrap": "debootstrap", "gcc": "gcc libc6-dev",
                "unshare": "util-linux", "git": "git"}  # fmt: skip
    return f"apt-get install {packages.get(program, program)} (as root)"


# --- the builder ----------------------------------------------------------------------------


class Builder:
    """Builds images into ``root`` (the cache): keys first, then only what has no archive."""

    def __init__(self, specs: Mapping[str, ImageSpec], root: Path) -> None:
        self.specs = specs
        self.root = root
        self.digests = Digests.load(root / "digests.json")
        self.keys: dict[str, str] = {}
        self.in_storage: set[str] = set()
        self.built: list[str] = []

    # keys

    def key(self, name: str) -> str:
        if name not in self.keys:
            self.keys[name] = self._compute_key(self.specs[name])
        return self.keys[name]

    def _compute_key(self, spec: ImageSpec) -> str:
        recipe = spec.recipe
        if isinstance(recipe, Debootstrap):
            return debootstrap_key(recipe, self._host_cas())
        if isinstance(recipe, FromDockerfile):
            args = {"BASE_IMAGE": self.key(recipe.base)}
            args |= {arg: self.key(image) for arg, image in recipe.image_args}
            return dockerfile_build_key(REPO_DIR, recipe.dockerfile, self.digests, args)
        inputs = recipe.inputs()
        files = {name: self.digests.of(path) for name, path in inputs.items()}
        base = {} if recipe.base is None else {"BASE_IMAGE": self.key(recipe.base)}
        extra = {"cflags": " ".join(PAUSE_CFLAGS)} if recipe.stage is compile_pause else {}
        return build_key(recipe.dockerfile, files, image_args=base, extra=extra)

    def _host_cas(self) -> dict[str, str]:
        certs = sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []
        return {cert.relative_to(HOST_CA_DIR).as_posix(): self.digests.of(cert) for cert in certs}

    def archive_path(self, name: str) -> Path:
        return self.root / archive_name(name, self.key(name))

    # archives

    def ensure_archive(self, name: str) -> ImageArchive:
        spec = self.specs[name]
        path = self.archive_path(name)
        if path.is_file():
            log.info("%s: cached (%s)", spec.reference, path.name)
        else:
            for dependency in spec.dependencies:
                self.ensure_in_storage(dependency)
            self._build(spec)
            self._push(spec, path)
            self.built.append(name)
        return ImageArchive(name, spec.reference, path, self.key(name))

    def ensure_in_storage(self, name: str) -> None:
        """The image with the current key in buildah's storage, for a build that starts FROM
        it: already there, loaded from its archive, or built (and archived)."""
        if name in self.in_storage:
            return
        spec = self.specs[name]
        key = self.key(name)
        if self._stored_key(spec.reference) != key:
            path = self.archive_path(name)
            if path.is_file():
                log.info("%s: loading %s into buildah's storage", spec.reference, path.name)
                output = _run(
                    ["buildah", "pull", "--quiet", f"oci-archive:{path}"],
                    what="loading the archive",
                    image=name,
                )
                image_id = output.split()[-1]
                _run(["buildah", "tag", image_id, spec.reference], what="tagging", image=name)
            else:
                self.ensure_archive(name)
        self.in_storage.add(name)

    def _stored_key(self, reference: str) -> str | None:
        done = subprocess.run(
            ["buildah", "inspect", "--type", "image", reference],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return None
        labels = json.loads(done.stdout).get("OCIv1", {}).get("config", {}).get("Labels") or {}
        value = labels.get(KEY_LABEL)
        return str(value) if value else None

    def _push(self, spec: ImageSpec, path: Path) -> None:
        progress = _Progress(spec.name)
        progress.start(f"writing {path.name}")
        staging = path.with_name(path.name + ".partial")
        staging.unlink(missing_ok=True)
        _run(
            [
                "buildah",
                "push",
                "--quiet",
                spec.reference,
                f"oci-archive:{staging}:{spec.reference}",
            ],
            what="writing the OCI archive",
            image=spec.name,
        )
        staging.replace(path)
        for old in self.root.glob(f"{spec.name}-*.tar"):
            if old != path and re.fullmatch(
                rf"{re.escape(spec.name)}-[0-9a-f]{{16}}\.tar", old.name
            ):
                old.unlink()  # an older key's archive
        size = path.stat().st_size / 1e6
        log.info(
            "%s: %s ready, %.0f MB (%.1f s)", spec.reference, path.name, size, progress.elapsed()
        )
        self.in_storage.add(spec.name)

    def _build(self, spec: ImageSpec) -> None:
        recipe = spec.recipe
        began = time.monotonic()
        log.info("%s: building (key %s)", spec.reference, self.key(spec.name)[:16])
        if isinstance(recipe, Debootstrap):
            self._build_debootstrap(spec, recipe)
        elif isinstance(recipe, FromDockerfile):
            args = {"BASE_IMAGE": self.specs[recipe.base].reference}
            args |= {arg: self.specs[image].reference for arg, image in recipe.image_args}
            self._bud(spec, REPO_DIR / recipe.dockerfile, REPO_DIR, args)
        else:
            self._build_generated(spec, recipe)
        log.info("%s: built in %.0f s", spec.reference, time.monotonic() - began)

    def _bud(
        self, spec: ImageSpec, dockerfile: Path, context: Path, args: Mapping[str, str]
    ) -> None:
        progress = _Progress(spec.name)
        cmd = [
            "buildah", "bud", "--isolation=oci", "--network=host", "--layers", "--pull=never",
            "--label", f"{KEY_LABEL}={self.key(spec.name)}",
            *(f"--build-arg={arg}={value}" for arg, value in args.items()),
            "-f", str(dockerfile), "-t", spec.reference, str(context),
        ]  # fmt: skip

        def step_of(line: str) -> str | None:
            return _shorten(line, 160) if _BUD_STEP.match(line) else None

        _stream(cmd, progress, step_of=step_of, what=f"buildah bud -f {dockerfile.name}")

    def _build_generated(self, spec: ImageSpec, recipe: Generated) -> None:
        context = self.root / "contexts" / f"{spec.name}-{self.key(spec.name)[:16]}"
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        try:
            inputs = recipe.inputs()
            (recipe.stage or _link_inputs)(inputs, context)
            base = "scratch" if recipe.base is None else self.specs[recipe.base].reference
            dockerfile = context / "Dockerfile"
            dockerfile.write_text(recipe.dockerfile.format(base=base))
            self._bud(spec, dockerfile, context, {})
        finally:
            shutil.rmtree(context, ignore_errors=True)

    # debootstrap

    def _build_debootstrap(self, spec: ImageSpec, recipe: Debootstrap) -> None:
        progress = _Progress(spec.name)
        rootfs = self.root / "rootfs" / f"{spec.name}-{self.key(spec.name)[:16]}"
        debs = self.root / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        try:
            progress.start(f"debootstrap {recipe.suite} ({len(recipe.packages)} packages and "
                           f"their dependencies; minutes on first run)")  # fmt: skip
            seen: set[str] = set()

            def step_of(line: str) -> str | None:
                # "I: Retrieving python3 3.11.2-1+b1": a step per kind of work, not per package.
                match = re.match(r"^I: (\w+)", line)
                if match is None or match.group(1) in seen:
                    return None
                seen.add(match.group(1))
                return f"debootstrap: {_shorten(line)}"

            _stream(
                ["debootstrap", f"--variant={recipe.variant}",
                 f"--include={','.join(recipe.packages)}", f"--cache-dir={debs}",
                 "--components=main", recipe.suite, str(rootfs), recipe.mirror],
                progress, step_of=step_of, what="debootstrap",
            )  # fmt: skip
            self._configure_rootfs(rootfs, recipe, progress)
            progress.start("buildah commit")
            self._commit_rootfs(spec, rootfs, recipe)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)

    def _configure_rootfs(self, rootfs: Path, recipe: Debootstrap, progress: _Progress) -> None:
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {recipe.mirror} {recipe.suite} main\n"
            f"deb {recipe.mirror} {recipe.suite}-updates main\n"
            f"deb {SECURITY_MIRROR} {recipe.suite}-security main\n"
        )
        shutil.copy2("/etc/resolv.conf", rootfs / "etc/resolv.conf")
        progress.start("apt-get upgrade (bookworm-updates and -security)")
        _stream(
            _chroot(rootfs, "sh", "-c", "apt-get update -q && apt-get -q -y "
                    "-o Dpkg::Options::=--force-confold upgrade && apt-get clean"),
            progress, what="apt-get upgrade", env=_chroot_env(),
        )  # fmt: skip
        progress.start("ca-certificates: the host's CAs")
        target = rootfs / HOST_CA_DIR.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for cert in sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []:
            shutil.copy2(cert, target / cert.name)
        _stream(
            _chroot(rootfs, "update-ca-certificates"), progress, what="update-ca-certificates",
            env=_chroot_env(),
        )  # fmt: skip
        # As the python images: no PEP 668 marker, so `pip install` works in derived images.
        for marker in (rootfs / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for leftover in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log/apt"):
            for item in (rootfs / leftover).glob("*"):
                if item.is_file() and item.name != "lock":
                    item.unlink()
        for item in (rootfs / "var/cache/apt").glob("*.bin"):
            item.unlink()
        (rootfs / "etc/resolv.conf").write_text("")  # the runtime mounts its own
        (rootfs / "etc/hostname").write_text("localhost\n")

    def _commit_rootfs(self, spec: ImageSpec, rootfs: Path, recipe: Debootstrap) -> None:
        name = spec.name
        container = _run(
            ["buildah", "from", "--name", f"cryptolake-{name}-{os.getpid()}", "scratch"],
            what="buildah from scratch",
            image=name,
        ).strip()
        try:
            mount = _run(["buildah", "mount", container], what="buildah mount", image=name).strip()
            _run(["cp", "-a", f"{rootfs}/.", f"{mount}/"], what="copying the rootfs", image=name)
            _run(["buildah", "umount", container], what="buildah umount", image=name)
            env = {
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8",
                # pip, uv and Python's ssl trust the system store (the host's CAs included).
                "SSL_CERT_FILE": CA_BUNDLE,
                "PIP_CERT": CA_BUNDLE,
                "REQUESTS_CA_BUNDLE": CA_BUNDLE,
            }
            java_homes = sorted((rootfs / "usr/lib/jvm").glob("java-*-openjdk-*"))
            if java_homes:
                env["JAVA_HOME"] = "/" + java_homes[-1].relative_to(rootfs).as_posix()
            _run(
                ["buildah", "config",
                 *(f"--env={key}={value}" for key, value in env.items()),
                 "--cmd", "/bin/bash",
                 f"--label={KEY_LABEL}={self.key(name)}",
                 f"--label=org.opencontainers.image.description=Debian {recipe.suite} "
                 f"({recipe.variant}) with {', '.join(recipe.packages)}",
                 container],
                what="buildah config", image=name,
            )  # fmt: skip
            _run(["buildah", "commit", "--quiet", container, spec.reference],
                 what="buildah commit", image=name)  # fmt: skip
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def _chroot(rootfs: Path, *argv: str) -> list[str]:
    """``argv`` inside ``rootfs`` with a /proc of its own (Java's CA hook and dpkg need one);
    the mount vanishes with the namespace."""
    return ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={rootfs}/proc",
            "chroot", str(rootfs), *argv]  # fmt: skip


def _chroot_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "HOME": "/root",
    }


def _link_inputs(inputs: dict[str, Path], context: Path) -> None:
    """Hard links (the cache and the context share a file system), else copies."""
    for name, source in inputs.items():
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def compile_pause(inputs: dict[str, Path], context: Path) -> None:
    """gcc -static the sandbox program into the context as ``pause``."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ToolingMissing(f"gcc is not installed: {_install_hint('gcc')}")
    done = subprocess.run(
        [gcc, *PAUSE_CFLAGS, "-o", str(context / "pause"), str(inputs["pause.c"])],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ImageBuildFailed(
            f"pause: gcc failed (a static build needs libc6-dev: {_install_hint('gcc')}):\n"
            f"{done.stderr.strip()}"
        )


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One build at a time per cache (a second waits)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("images: another build holds %s; waiting", root / ".lock")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prune_storage() -> int:
    """Remove the untagged images of buildah's storage that no other image builds on (replaced
    builds, finished build stages), repeatedly, so whole chains of old layers go; the layers
    under tagged images stay, and with them the layer cache of the current builds. Returns how
    many images went."""
    removed = 0
    for _ in range(100):  # a chain is a few dozen steps at most
        done = subprocess.run(
            ["buildah", "rmi", "--prune"], capture_output=True, text=True, check=False
        )
        gone = done.stdout.split()
        if done.returncode != 0 or not gone:
            break
        removed += len(gone)
    return removed


def _prune_if_short_of_space() -> None:
    storage = BUILDAH_STORAGE if BUILDAH_STORAGE.exists() else Path("/")
    free = shutil.disk_usage(storage).free
    if free >= MIN_FREE_BYTES:
        return
    began = time.monotonic()
    removed = prune_storage()
    log.info(
        "images: %.1f GB free in %s, pruned %d untagged images (now %.1f GB free, %.0f s)",
        free / 1e9,
        storage,
        removed,
        shutil.disk_usage(storage).free / 1e9,
        time.monotonic() - began,
    )


def images_root() -> Path:
    return cache_root() / "images"


def _check_tools() -> None:
    if os.geteuid() != 0:
        raise ToolingMissing("building images needs root (buildah, debootstrap): run as root")
    for program in ("buildah", "git"):
        if shutil.which(program) is None:
            raise ToolingMissing(f"{program} is not installed: {_install_hint(program)}")


def build_images(names: list[str] | None = None) -> dict[str, ImageArchive]:
    """Build (or find in the cache) the OCI archive of each image in ``names`` (default:
    DEFAULT_IMAGES; CoreDNS is left out with a log line when its binary is not built yet).
    Returns name → ImageArchive, in build order."""
    specs = image_specs()
    if names is None:
        wanted = [name for name in DEFAULT_IMAGES if name in specs]
        if COREDNS in wanted:
            try:
                binaries.installed_binary(COREDNS)
            except ToolingMissing as exc:
                log.info("coredns: skipped (%s)", exc)
                wanted.remove(COREDNS)
    else:
        wanted = list(dict.fromkeys(names))
    order = build_order(wanted, specs)
    _check_tools()
    root = images_root()
    began = time.monotonic()
    with _locked(root):
        builder = Builder(specs, root)
        try:
            for name in order:
                builder.key(name)
            archives = {name: builder.ensure_archive(name) for name in order if name in wanted}
        finally:
            builder.digests.save()
        if builder.built:
            _prune_if_short_of_space()
    log.info("images: %d ready in %.1f s (%s)", len(archives), time.monotonic() - began, root)
    return archives


def main(argv: list[str] | None = None) -> int:
    """``python -m cryptolake.stack.images [NAME…]``: build, then print ``REF ARCHIVE`` lines."""
    parser = argparse.ArgumentParser(
        prog="python -m cryptolake.stack.images",
        description="Build the project's container images offline into OCI archives.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"images (default: {', '.join(DEFAULT_IMAGES)}; also: "
        f"{', '.join(sorted(set(IMAGE_REFS) - set(DEFAULT_IMAGES)))})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also log build output")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s images: %(message)s",
    )
    try:
        archives = build_images(args.names or None)
    except (ToolingMissing, ImageBuildFailed) as exc:
        log.error("%s", exc)
        return 1
    for archive in archives.values():
        print(f"{archive.reference} {archive.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
