import time
from datetime import UTC, datetime

import httpx
import pytest

from cryptolake.stack.binaries import installed_binary, kubernetes_ldflags
from cryptolake.stack.jars import ToolingMissing
from cryptolake.stack.kube import (
    ADMIN_USER,
    ControlPlaneConfig,
    ControlPlaneFiles,
    Tokens,
    build_apiserver_args,
    build_controller_manager_args,
    build_kubeconfig,
    build_token_file,
    make_credentials,
)
from cryptolake.stack.pytest_plugin import KubeCluster, read_kubeconfig

GC_DEADLINE_S = 30.0


def test_kubernetes_ldflags_stamp_the_release_not_v0_0_0_master():
    flags = kubernetes_ldflags("v1.34.4", datetime(2026, 2, 10, 12, 53, 36, tzinfo=UTC))
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.34.4" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=34" in flags
        assert f"-X {package}.gitTreeState=clean" in flags
        assert f"-X {package}.buildDate=2026-02-10T12:53:36Z" in flags
    with pytest.raises(ValueError, match="not a Kubernetes release"):
        kubernetes_ldflags("v0.0.0-20260210125336-abcdef123456", datetime.now(UTC))


def test_token_file_makes_the_admin_a_system_master_and_reads_back():
    tokens = Tokens(admin="a" * 8, controller_manager="c" * 8)
    text = build_token_file(tokens)
    assert f'aaaaaaaa,{ADMIN_USER},{ADMIN_USER},"system:masters"' in text
    assert "cccccccc,system:kube-controller-manager," in text
    assert Tokens.from_token_file(text) == tokens


def test_apiserver_binds_loopback_with_rbac_and_service_accounts(tmp_path):
    config = ControlPlaneConfig(data_dir=tmp_path, apiserver_port=16443, etcd_client_port=12379)
    args = build_apiserver_args(config, ControlPlaneFiles(tmp_path))
    assert "--bind-address=127.0.0.1" in args
    assert "--secure-port=16443" in args
    assert "--etcd-servers=http://127.0.0.1:12379" in args
    assert "--authorization-mode=RBAC" in args
    assert f"--service-account-signing-key-file={tmp_path / 'pki' / 'sa.key'}" in args
    assert any(arg.startswith("--service-account-issuer=https://") for arg in args)


def test_controller_manager_signs_tokens_and_runs_without_leader_election(tmp_path):
    config = ControlPlaneConfig(data_dir=tmp_path, controller_manager_port=10999)
    args = build_controller_manager_args(config, ControlPlaneFiles(tmp_path))
    assert "--use-service-account-credentials=true" in args
    assert f"--service-account-private-key-file={tmp_path / 'pki' / 'sa.key'}" in args
    assert "--leader-elect=false" in args
    assert "--bind-address=127.0.0.1" in args
    assert "--secure-port=10999" in args


def test_kubeconfig_names_the_server_the_ca_and_the_token(tmp_path):
    files = ControlPlaneFiles(tmp_path)
    make_credentials(files, "127.0.0.1", build_token_file(Tokens()))
    path = tmp_path / "kubeconfig"
    path.write_text(
        build_kubeconfig("https://127.0.0.1:16443", files.ca_cert.read_bytes(), "me", "t0ken")
    )
    cluster = read_kubeconfig(path)
    assert cluster.server == "https://127.0.0.1:16443"
    assert cluster.token == "t0ken"
    assert cluster.ssl_context.verify_mode.name == "CERT_REQUIRED"


def test_missing_binaries_say_to_run_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYPTOLAKE_CACHE", str(tmp_path))
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        with pytest.raises(ToolingMissing, match=rf"{name} binary missing .*run `make setup`"):
            installed_binary(name)


def test_apiserver_reports_its_release_version(kube_control_plane: KubeCluster):
    with kube_control_plane.client() as client:
        version = client.get("/version").raise_for_status().json()
    assert version["gitVersion"].startswith("v1.34."), version
    assert (version["major"], version["minor"]) == ("1", "34")


def test_garbage_collector_deletes_the_dependents_of_a_deleted_owner(
    kube_control_plane: KubeCluster, kube_namespace: str
):
    configmaps = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    with kube_control_plane.client() as client:
        owner = client.post(configmaps, json=_configmap("owner")).raise_for_status().json()
        child = _configmap("child")
        child["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "owner",
                "uid": owner["metadata"]["uid"],
            }
        ]
        client.post(configmaps, json=child).raise_for_status()

        client.request(
            "DELETE", f"{configmaps}/owner", json={"propagationPolicy": "Background"}
        ).raise_for_status()

        deadline = time.monotonic() + GC_DEADLINE_S
        while client.get(f"{configmaps}/child").status_code != 404:
            assert time.monotonic() < deadline, "the garbage collector left the child in place"
            time.sleep(0.25)


def test_a_wrong_token_is_unauthenticated_and_an_unbound_user_is_forbidden(
    kube_control_plane: KubeCluster,
):
    with kube_control_plane.client() as client:
        wrong = client.get("/api/v1/namespaces", headers={"Authorization": "Bearer wrong"})
        # The admin may impersonate; RBAC then judges the impersonated user, who has no roles.
        nobody = client.get("/api/v1/namespaces", headers={"Impersonate-User": "nobody"})
    assert wrong.status_code == 401
    assert nobody.status_code == 403


def test_service_account_tokens_are_issued_and_authenticate(
    kube_control_plane: KubeCluster, kube_namespace: str
):
    account = f"/api/v1/namespaces/{kube_namespace}/serviceaccounts/default"
    with kube_control_plane.client() as client:
        # The controller-manager's serviceaccount controller creates `default` in a new namespace.
        deadline = time.monotonic() + GC_DEADLINE_S
        while client.get(account).status_code == 404:
            assert time.monotonic() < deadline, "no default service account"
            time.sleep(0.25)
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        issued = client.post(f"{account}/token", json=request).raise_for_status().json()
    token = issued["status"]["token"]
    with httpx.Client(
        base_url=kube_control_plane.server,
        headers={"Authorization": f"Bearer {token}"},
        verify=kube_control_plane.ssl_context,
    ) as as_account:
        review = as_account.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        ).raise_for_status()
    username = review.json()["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{kube_namespace}:default"


def _configmap(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}
