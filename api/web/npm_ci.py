"""``npm ci --omit=dev`` for the dashboard's browser libraries, without Node: every package of
package-lock.json is fetched from the npm registry, checked against the lock's ``integrity``
(sha512) and unpacked where npm would put it (no install scripts; these packages have none).

The api image runs it in its build stage, so the image needs neither a Node image nor npm:
    python3 npm_ci.py package-lock.json node_modules/..
Standard library only (Debian's python3 or the python image's).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

REGISTRY = "https://registry.npmjs.org"
ATTEMPTS = 3


class LockError(RuntimeError):
    """The lock file, a download or a tarball is not what it should be."""


def tarball_url(name: str, version: str, resolved: str | None = None) -> str:
    """The lock's ``resolved`` URL, else the registry's: ``/<name>/-/<basename>-<version>.tgz``
    (``@scope/pkg`` → ``/@scope/pkg/-/pkg-1.0.0.tgz``)."""
    if resolved:
        return resolved
    return f"{REGISTRY}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def check_integrity(data: bytes, integrity: str) -> None:
    """Raise LockError unless ``data`` matches one of the lock's sha512 hashes (SRI format:
    ``sha512-<base64>``, several separated by spaces)."""
    hashes = [item.partition("-") for item in integrity.split()]
    expected = [base64.b64decode(digest) for algo, _, digest in hashes if algo == "sha512"]
    if not expected:
        raise LockError(f"no sha512 in integrity {integrity!r}")
    if hashlib.sha512(data).digest() not in expected:
        raise LockError(f"sha512 mismatch (lock has {integrity})")


def locked_packages(
    lock: dict[str, Any], *, omit_dev: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(install path, entry) of each package in a lockfileVersion 2/3 lock."""
    if lock.get("lockfileVersion", 0) < 2:
        raise LockError(
            "package-lock.json has no 'packages' (lockfileVersion < 2): run npm install"
        )
    for path, entry in lock["packages"].items():
        if not path or entry.get("link") or (omit_dev and entry.get("dev")):
            continue
        yield path, entry


def package_name(path: str, entry: dict[str, Any]) -> str:
    return str(entry.get("name") or path.rsplit("node_modules/", 1)[-1])


def unpack(data: bytes, target: Path) -> None:
    """Unpack an npm tarball (one top folder, usually ``package/``) into ``target``."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts[1:]
            if not parts:
                continue
            if member.name.startswith("/") or ".." in parts:
                raise LockError(f"unsafe path in tarball: {member.name}")
            destination = target.joinpath(*parts)
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                destination.write_bytes(source.read())
                destination.chmod(0o755 if member.mode & 0o111 else 0o644)
            # links and devices: npm packages have none worth keeping


def fetch(url: str) -> bytes:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data: bytes = response.read()
                return data
        except OSError as exc:
            if attempt == ATTEMPTS:
                raise LockError(f"cannot download {url}: {exc}") from exc
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def install(lock_file: Path, root: Path, *, omit_dev: bool = True) -> list[str]:
    """Install every package of ``lock_file`` under ``root`` (the folder holding
    node_modules); returns the installed paths."""
    lock = json.loads(lock_file.read_text())
    installed = []
    for path, entry in locked_packages(lock, omit_dev=omit_dev):
        name = package_name(path, entry)
        if "version" not in entry or "integrity" not in entry:
            raise LockError(f"{path}: the lock has no version or integrity")
        url = tarball_url(name, entry["version"], entry.get("resolved"))
        data = fetch(url)
        check_integrity(data, entry["integrity"])
        unpack(data, root / path)
        installed.append(path)
        print(f"npm_ci: {name}@{entry['version']} → {root / path}", flush=True)
    return installed


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: npm_ci.py <package-lock.json> <install root>", file=sys.stderr)
        return 2
    try:
        install(Path(argv[0]), Path(argv[1]))
    except LockError as exc:
        print(f"npm_ci: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
