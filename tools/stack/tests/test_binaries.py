from datetime import UTC, datetime

import pytest

from cryptolake.stack.binaries import (
    GO_PROGRAMS,
    binary_path,
    minio_ldflags,
    module_version,
    program_version,
    pseudo_version_time_and_commit,
)

GO_MOD = """\
module cryptolake.io/tools/minio

go 1.24.0

tool github.com/minio/minio

require (
\taead.dev/mem v0.2.0 // indirect
\tgithub.com/minio/minio v0.0.0-20260212201848-7aac2a2c5b7c // indirect
\tgithub.com/minio/minio-go/v7 v7.0.90 // indirect
)
"""


def test_module_version_reads_the_required_version_not_a_longer_namesake():
    assert module_version(GO_MOD, "github.com/minio/minio") == "v0.0.0-20260212201848-7aac2a2c5b7c"
    assert module_version(GO_MOD, "github.com/minio/minio-go/v7") == "v7.0.90"


def test_pseudo_version_gives_commit_time_and_hash():
    assert pseudo_version_time_and_commit("v0.0.0-20260212201848-7aac2a2c5b7c") == (
        datetime(2026, 2, 12, 20, 18, 48, tzinfo=UTC),
        "7aac2a2c5b7c",
    )
    with pytest.raises(ValueError, match="not a Go pseudo-version"):
        pseudo_version_time_and_commit("v1.2.3")


def test_minio_ldflags_stamp_version_and_commit():
    flags = minio_ldflags("v0.0.0-20260212201848-7aac2a2c5b7c")
    assert "-X github.com/minio/minio/cmd.Version=2026-02-12T20:18:48Z" in flags
    assert "-X github.com/minio/minio/cmd.ReleaseTag=DEVELOPMENT.2026-02-12T20-18-48Z" in flags
    assert "-X github.com/minio/minio/cmd.CommitID=7aac2a2c5b7c" in flags


def test_binary_is_keyed_by_the_pinned_version(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYPTOLAKE_CACHE", str(tmp_path))
    version = program_version(GO_PROGRAMS["minio"])
    assert binary_path("minio") == tmp_path / "bin" / f"minio-{version}"


def test_kubernetes_programs_share_one_wrapper_module_and_its_version(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYPTOLAKE_CACHE", str(tmp_path))
    apiserver, controller_manager = (
        GO_PROGRAMS["kube-apiserver"],
        GO_PROGRAMS["kube-controller-manager"],
    )
    assert apiserver.module_dir == controller_manager.module_dir
    assert apiserver.module_dir.name == "kubernetes"
    version = program_version(apiserver)
    assert version.startswith("v1.34.")
    assert (
        binary_path("kube-controller-manager")
        == tmp_path / "bin" / f"kube-controller-manager-{version}"
    )


def test_etcd_is_pinned_to_a_3_6_release():
    assert program_version(GO_PROGRAMS["etcd"]).startswith("v3.6.")
