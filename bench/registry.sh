#!/usr/bin/env bash
# bench/registry.sh — what shipping generations through a registry costs:
# the first push of a generation, the push of the next one (an update), and
# a pull onto a second, empty store, against Debian's docker-registry on
# 127.0.0.1.
#
# Usage (as root):   CONFIG=/var/tmp/lab11/bootd.yaml bash bench/registry.sh IMAGE GEN1 GEN2
#   e.g. GEN2 made from GEN1 by `bootd image update IMAGE --install hello`.
# Knobs: BOOTD_BIN= (default: build ./cmd/bootd), OUT=bench/out/registry
#
# Output: the push reports (layers, compressed bytes, blobs and bytes
# uploaded) and the pull's time, in OUT/report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ $# -eq 3 ] || die "usage: CONFIG=FILE bash bench/registry.sh IMAGE GEN1 GEN2"
image=$1 gen1=$2 gen2=$3
: "${CONFIG:?set CONFIG to the bootd.yaml whose store has the image}"
OUT=${OUT:-bench/out/registry}
rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
command -v docker-registry >/dev/null || die "apt-get install docker-registry"
bin=${BOOTD_BIN:-$OUT/bootd}
[ -n "${BOOTD_BIN:-}" ] || CGO_ENABLED=0 go build -o "$bin" ./cmd/bootd

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$OUT/registry.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $OUT/registry}}
http: {addr: "127.0.0.1:$port"}
EOC
docker-registry serve "$OUT/registry.yml" >"$OUT/registry.log" 2>&1 &
reg_pid=$!
state2=$OUT/state2
cleanup() { stop_pid "$reg_pid"; rm -rf "$state2" "$OUT/registry"; }
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
repo=127.0.0.1:$port/bootd/$image

{
	log "push $image/$gen1 (first: the registry is empty)"
	"$bin" image push "$image/$gen1" "$repo" --config "$CONFIG" | tail -1
	log "push $image/$gen2 (the next generation)"
	"$bin" image push "$image/$gen2" "$repo" --config "$CONFIG" | tail -1
	sed "s|^state_dir:.*|state_dir: $state2|" "$CONFIG" >"$OUT/pull.yaml"
	log "pull $image:$gen2 onto an empty store"
	start=$(date +%s.%N)
	"$bin" image pull "$repo:$gen2" --config "$OUT/pull.yaml" | tail -1
	echo "pull: $(echo "$(date +%s.%N) - $start" | bc) s"
} 2>&1 | tee "$OUT/report.txt"
