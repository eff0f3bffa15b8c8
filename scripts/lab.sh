#!/usr/bin/env bash
# lab.sh: the main job. Builds bootd, then `bootd lab up`: a Debian 13 image
# (built on first run, packages cached), a site DHCP server (dnsmasq), bootd
# as the master in proxy mode, and two QEMU nodes (BIOS + e1000, UEFI +
# virtio-net) that PXE-boot to a login prompt, all inside network
# namespaces on this machine. Extra arguments go to `bootd lab up`.
# The lab keeps running afterwards: `bootd lab console node01`, `bootd lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export PATH="$PATH:/usr/local/go/bin"
CGO_ENABLED=0 go build -ldflags='-s -w' -o /usr/local/bin/bootd ./cmd/bootd
echo "bootd installed at /usr/local/bin/bootd"
exec bootd lab up --nodes 2 --firmware mixed "$@"
