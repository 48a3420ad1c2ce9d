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
# - prometheus (Debian's, for promtool) and prometheus-client (PyPI, in the same venv):
#   metrics_formats.rs checks `/metrics` in the classic text format with `promtool check
#   metrics` and in OpenMetrics with the Python client's OpenMetrics parser.
# - podman: deploy_artifacts.rs builds the container image and runs compose.yaml's cluster
#   where a container runtime can run; where it cannot, the test says why and skips that part.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0
PROMETHEUS_CLIENT_VERSION=0.21.1
VENV="${CONCLAVE_CI_VENV:-$HOME/.cache/conclave-ci/venv}"

apt_packages=()
if ! { command -v ip >/dev/null 2>&1 && ip netns list >/dev/null 2>&1; }; then
  apt_packages+=(iproute2)
fi
if ! command -v podman >/dev/null 2>&1; then
  apt_packages+=(podman)
fi
if ! command -v promtool >/dev/null 2>&1; then
  apt_packages+=(prometheus)
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
  echo "iproute2, podman and promtool present"
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

if "$VENV/bin/pip" show prometheus-client 2>/dev/null | grep -qx "Version: $PROMETHEUS_CLIENT_VERSION"; then
  echo "prometheus-client $PROMETHEUS_CLIENT_VERSION present in $VENV"
else
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
  echo "installed prometheus-client $PROMETHEUS_CLIENT_VERSION into $VENV"
fi
