#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine. Idempotent: what is present is left
# alone. Without root, what needs apt is left out and the tests that need it skip themselves
# and say why (under CI=true they fail instead, see node/tests/support/netns.rs).
#
# - iproute2 (`ip netns`, veth, bridges): the real network tests, partition_netns.rs and
#   netns_cluster.rs.
# - kubernetes-validate (PyPI), in a virtual environment: deploy_artifacts.rs checks the
#   Kubernetes manifests in deploy/kubernetes/ against the Kubernetes schemas it bundles
#   (offline). The venv is $CONCLAVE_CI_VENV (default ~/.cache/conclave-ci/venv); the test looks
#   there.
# - podman: deploy_artifacts.rs builds the container image and runs compose.yaml's cluster
#   where a container runtime can run; where it cannot, the test says why and skips that part.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0
VENV="${CONCLAVE_CI_VENV:-$HOME/.cache/conclave-ci/venv}"

apt_packages=()
if ! { command -v ip >/dev/null 2>&1 && ip netns list >/dev/null 2>&1; }; then
  apt_packages+=(iproute2)
fi
if ! command -v podman >/dev/null 2>&1; then
  apt_packages+=(podman)
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  apt_packages+=(python3-venv)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "not root: cannot install ${apt_packages[*]}; the tests that need them will skip themselves"
  else
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
    echo "installed ${apt_packages[*]}"
  fi
else
  echo "iproute2 and podman present"
fi

if [ -x "$VENV/bin/kubernetes-validate" ] \
  && "$VENV/bin/pip" show kubernetes-validate 2>/dev/null | grep -qx "Version: $KUBERNETES_VALIDATE_VERSION"; then
  echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION present in $VENV"
else
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  echo "installed kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
fi
