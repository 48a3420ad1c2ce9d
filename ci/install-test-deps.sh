#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine: iproute2 (`ip netns`, veth) for the
# real network-partition test. Idempotent; does nothing if everything is present. Without root
# the partition test skips itself and says why.
set -euo pipefail
if command -v ip >/dev/null 2>&1 && ip netns list >/dev/null 2>&1; then
  echo "iproute2 present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: cannot install iproute2; the network-partition test will skip itself"
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
echo "installed iproute2"
