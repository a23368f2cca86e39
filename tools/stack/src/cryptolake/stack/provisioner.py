"""The local cluster's volume provisioner: a PersistentVolume in a host folder for each claim of
the default StorageClass, removed with its folder when the claim is released (reclaim Delete).

Folders are world-writable, as a node-local provisioner's are, so pods running as any user
(the broker and MinIO run as 10001) can write their volume. Run by `make cluster-up`:
``python -m cryptolake.stack.provisioner --kubeconfig K --root DIR``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from cryptolake.stack.cluster import PROVISIONER_NAME, STORAGE_CLASS

log = logging.getLogger("cryptolake.provisioner")
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def volume_name(claim_uid: str) -> str:
    return f"pvc-{claim_uid}"


def build_volume(claim: dict[str, Any], root: Path) -> dict[str, Any]:
    """The PersistentVolume for a pending claim, bound to it by claimRef (pure)."""
    meta, spec = claim["metadata"], claim["spec"]
    name = volume_name(meta["uid"])
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER_NAME}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "hostPath": {"path": str(root / name), "type": "Directory"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


def wants_volume(claim: dict[str, Any]) -> bool:
    """A claim of our class (or of none, the default) still waiting for a volume."""
    spec = claim["spec"]
    return (
        claim.get("status", {}).get("phase") == "Pending"
        and not spec.get("volumeName")
        and spec.get("storageClassName") in (STORAGE_CLASS, None)
    )


class Provisioner:
    def __init__(self, kubeconfig: Path, root: Path) -> None:
        from kubernetes import client, config  # noqa: PLC0415

        self.api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        self.root = root

    def reconcile_once(self) -> None:
        listed = self.api.list_persistent_volume_claim_for_all_namespaces()
        # The API's own (camelCase) shape, as the pure functions expect.
        claims = self.api.api_client.sanitize_for_serialization(listed)
        for claim in claims["items"]:
            if wants_volume(claim):
                self._provision(claim)
        for volume in self.api.list_persistent_volume().items:
            annotations = volume.metadata.annotations or {}
            if annotations.get(PROVISIONED_BY) == PROVISIONER_NAME and volume.status.phase in (
                "Released",
                "Failed",
            ):
                self._delete(volume.metadata.name)

    def _provision(self, claim: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        volume = build_volume(claim, self.root)
        folder = Path(volume["spec"]["hostPath"]["path"])
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        try:
            self.api.create_persistent_volume(volume)
        except ApiException as exc:
            if exc.status != 409:  # 409: made in an earlier round
                raise
            return
        meta = claim["metadata"]
        log.info("provisioned %s for %s/%s", volume["metadata"]["name"], meta["namespace"],
                 meta["name"])  # fmt: skip

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        shutil.rmtree(self.root / name, ignore_errors=True)
        try:
            self.api.delete_persistent_volume(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        log.info("deleted %s and its folder", name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="folder of the volumes")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
    from urllib3.exceptions import HTTPError  # noqa: PLC0415

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    provisioner = Provisioner(args.kubeconfig, args.root)
    log.info("provisioning %s claims into %s", STORAGE_CLASS, args.root)
    while not stop.is_set():
        try:
            provisioner.reconcile_once()
        except (ApiException, HTTPError) as exc:  # the API server restarting: next round
            log.warning("round failed: %s", exc)
        stop.wait(args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
