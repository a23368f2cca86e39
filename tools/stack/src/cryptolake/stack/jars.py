"""Third-party jars resolved from Maven Central by the poms in ``tools/maven/<name>/`` into a
cache keyed by the pom's content, so a version bump resolves anew and a warm machine skips it."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from cryptolake.common.settings import cache_root

log = logging.getLogger(__name__)

# tools/stack/src/cryptolake/stack/jars.py → tools/
TOOLS_DIR = Path(__file__).resolve().parents[4]
MAVEN_DIR = TOOLS_DIR / "maven"


class ToolingMissing(RuntimeError):
    """A required tool or cache is absent; the message says which command installs it."""


def pom_path(name: str) -> Path:
    pom = MAVEN_DIR / name / "pom.xml"
    if not pom.is_file():
        known = sorted(p.name for p in MAVEN_DIR.iterdir() if (p / "pom.xml").is_file())
        raise ToolingMissing(f"no jar set {name!r} in {MAVEN_DIR}; known: {', '.join(known)}")
    return pom


def jars_dir(name: str) -> Path:
    """The cache folder for jar set ``name`` (it may not be resolved yet)."""
    digest = hashlib.sha256(pom_path(name).read_bytes()).hexdigest()[:12]
    return cache_root() / "jars" / f"{name}-{digest}"


def resolved_jars_dir(name: str) -> Path:
    """The folder holding jar set ``name``; raises ToolingMissing when setup has not run."""
    target = jars_dir(name)
    if not (target / ".complete").exists():
        raise ToolingMissing(f"the {name} jars are not in {target}: run `make setup`")
    return target


def resolve_jars(name: str) -> Path:
    """Copy jar set ``name`` and its runtime dependencies into the cache (idempotent)."""
    target = jars_dir(name)
    if (target / ".complete").exists():
        log.info("%s jars: cached in %s", name, target)
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolingMissing("Maven (mvn) is not on PATH: run `make setup` (installs it)")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    log.info("%s jars: resolving from Maven Central into %s (first run only)…", name, target)
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom_path(name)),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        check=False,
    )
    if result.returncode != 0:
        raise ToolingMissing(
            f"Maven could not resolve the {name} jars (exit {result.returncode}; its errors are "
            f"above): check that Maven Central is reachable and the versions in "
            f"{pom_path(name)} exist"
        )
    (staging / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("%s jars: %d files ready", name, len(list(target.glob("*.jar"))))
    return target
