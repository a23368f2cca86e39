#!/usr/bin/env bash
# make setup: everything CryptoLake needs, from Debian, PyPI, npm, Maven Central and the Go
# module proxy. Idempotent; each step says what it does and skips itself when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
PYTHON=${PYTHON:-python3.11}
export UV_PYTHON_DOWNLOADS=never UV_PYTHON="$PYTHON"
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
started=$(date +%s)

# System packages: a JDK 17 for Kafka and Spark, Maven to resolve jars, npm for the dashboard's
# chart library, Chromium for the dashboard's browser test, wrk for the API benchmark, and the
# cluster's node parts.
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v "$PYTHON" >/dev/null || missing+=(python3.11 python3.11-venv)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
# The local Kubernetes cluster (make cluster-up) and its images (make images): a container
# runtime, CNI plugins, iptables for kube-proxy, ipset for the NetworkPolicy firewall, buildah and
# debootstrap to build images.
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v ipset >/dev/null || missing+=(ipset)
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "run as root or install: ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! "$PYTHON" -m uv --version 2>/dev/null | grep -q "uv $UV_VERSION"; then
  step "installing uv $UV_VERSION from PyPI"
  "$PYTHON" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

step "python environment (.venv, uv.lock)"
"$PYTHON" -m uv sync --frozen --all-packages --quiet

# npm writes node_modules/.package-lock.json on every install: missing or older than the lock
# means node_modules is stale.
web_installed=api/web/node_modules/.package-lock.json
if [ ! -f "$web_installed" ] || [ api/web/package-lock.json -nt "$web_installed" ]; then
  step "dashboard chart library from npm (api/web/node_modules, package-lock.json)"
  npm ci --prefix api/web --no-audit --no-fund --loglevel=error
fi

step "jars from Maven Central (cached in ${CRYPTOLAKE_CACHE:-~/.cache/cryptolake})"
.venv/bin/cryptolake-stack fetch

# Go 1.24+ builds MinIO, etcd and Kubernetes; Debian's golang-go is older, these machines have it
# in /usr/local/go.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
step "MinIO, etcd, Kubernetes (control plane, node, kubectl), CoreDNS, kube-router, Helm from their Go modules (cached in ${CRYPTOLAKE_CACHE:-~/.cache/cryptolake}/bin, linked into .venv/bin)"
.venv/bin/cryptolake-stack build --link .venv/bin

echo "setup done in $(( $(date +%s) - started )) s"
