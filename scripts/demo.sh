#!/usr/bin/env bash
# demo.sh: build bootd, publish a small sample image and serve it over
# read-only NFSv3 on 127.0.0.1, then read it back with a real NFS client.
# (The QEMU PXE lab replaces this once nodes can boot end to end.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

work=$(mktemp -d /tmp/bootd-demo.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/bootd" ./cmd/bootd
root="$work/state/images/demo/1/root"
mkdir -p "$root"/{etc,bin,tmp,usr/share/zoneinfo}
echo demo-node > "$root/etc/hostname"
cp /bin/ls "$root/bin/"; chmod 4755 "$root/bin/ls"; chmod 1777 "$root/tmp"
ln -s /usr/share/zoneinfo/UTC "$root/etc/localtime"
ln -s 1 "$work/state/images/demo/current"
cat > "$work/bootd.yaml" <<YAML
state_dir: $work/state
dhcp: {mode: "off"}
tftp: {listen: ""}
nfs:
  listen: "127.0.0.1:20490"
  allow: ["127.0.0.1/32"]
  secure_ports: false
YAML
"$work/bootd" serve --config "$work/bootd.yaml" &
pid=$!
sleep 1
url() { echo "nfs://127.0.0.1$1?version=3&nfsport=20490&mountport=20490"; }
echo "== nfs-ls -R /demo (the current generation)"
nfs-ls -R "$(url /demo)"
echo "== nfs-cat /demo/1/etc/hostname"
nfs-cat "$(url /demo/1/etc/hostname)"
echo "== a Linux node would mount it with:"
echo "   mount -t nfs -o vers=3,proto=tcp,port=20490,mountport=20490,mountproto=tcp,nolock,ro MASTER:/demo /mnt"
