#!/usr/bin/env bash
# Installs the Debian packages of the benchmark's peers: Mosquitto 2 (ingest-rows, fanout), InfluxDB 1.6
# (ingest-columns, query) and NATS server 2.9 (fanout). Idempotent. The benchmark starts each peer itself, on
# loopback, on a free port, with a config in a temporary directory, so the packages' own services are kept
# from starting during the install.
set -euo pipefail
packages=(mosquitto influxdb nats-server)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_peers: ${packages[*]} already installed"
  exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi
# Refresh the package lists only when apt does not know the packages yet.
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
  "${as_root[@]}" apt-get update
fi
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  # exit 101: "action forbidden by policy", so invoke-rc.d starts no service during the install.
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod +x "$policy"
  made_policy=1
fi
cleanup() {
  if [ "$made_policy" -eq 1 ]; then
    "${as_root[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
echo "install_peers: installed ${missing[*]}"
