"""kind, where a Docker engine answers: the cluster of kind-config.yaml with the project's images
built by docker from the component Dockerfiles and loaded with `kind load` (the e2e fixture's
second choice; this machine kind has no Docker engine, so the local cluster is used instead)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptolake.stack.helm import REPO_DIR

NAME = "cryptolake-e2e"
# Reference → Dockerfile, as skaffold.yaml builds them.
DOCKER_IMAGES = {
    "localhost/cryptolake/operator:0.1.0": "operator/Dockerfile",
    "localhost/cryptolake/producer:0.1.0": "producer/Dockerfile",
    "localhost/cryptolake/jobs:0.1.0": "jobs/Dockerfile",
    "localhost/cryptolake/api:0.1.0": "api/Dockerfile",
    "localhost/cryptolake/minio:latest": "tools/images/minio/Dockerfile",
}


class KindCluster:
    def __init__(self, name: str = NAME) -> None:
        self.name = name
        self.kubeconfig = REPO_DIR / ".local" / f"kind-{name}.kubeconfig"

    def _run(self, *cmd: str) -> None:
        subprocess.run(list(cmd), check=True, cwd=REPO_DIR)

    def up(self) -> None:
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self._run(
            "kind",
            "create",
            "cluster",
            "--name",
            self.name,
            "--config",
            str(REPO_DIR / "kind-config.yaml"),
            "--kubeconfig",
            str(self.kubeconfig),
        )
        for reference, dockerfile in DOCKER_IMAGES.items():
            self._run("docker", "build", "-f", dockerfile, "-t", reference, ".")
            self._run("kind", "load", "docker-image", reference, "--name", self.name)

    def down(self) -> None:
        self._run("kind", "delete", "cluster", "--name", self.name)
        Path(self.kubeconfig).unlink(missing_ok=True)
