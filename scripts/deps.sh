#!/usr/bin/env bash
# deps.sh: install what bootd's build, demo and tests need on Debian 12, as
# root. Safe to run again; it only installs what is missing.
set -euo pipefail

need_go="1.26"
# libnfs-utils, curl, isc-dhcp-server, kea-dhcp4-server and dnsmasq-base:
# real clients and peers the tests check bootd against (the site DHCP
# servers of the lab's boot matrix). qemu, ipxe-qemu, ovmf, the syslinux
# loaders, ipxe (the iPXE builds bootd chains to) and a Debian kernel: the
# PXE boots of the lab tests. chromium: the
# status page is tested in a real browser. docker-registry: image push and
# pull are tested against a real registry; keepalived: the two-master lab.
pkgs=(ca-certificates git curl cpio iproute2 libnfs-utils isc-dhcp-server kea-dhcp4-server dnsmasq-base
  qemu-system-x86 ipxe-qemu ipxe ovmf pxelinux syslinux-common syslinux-efi linux-image-amd64
  mmdebstrap busybox chromium docker-registry keepalived)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Go: use the one on PATH (or /usr/local/go) when it is new enough; else
# Debian's go with the toolchain the module asks for, fetched by the go
# command itself through the module proxy.
export PATH="$PATH:/usr/local/go/bin:/root/go/bin"
if ! command -v go >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq -t bookworm-backports golang-go >/dev/null 2>&1 || apt-get install -y -qq golang-go >/dev/null
fi
have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need_go" "$have" | sort -V | head -1)" != "$need_go" ]; then
  export GOTOOLCHAIN=auto
fi
cd "$(dirname "$0")/.."
go mod download
