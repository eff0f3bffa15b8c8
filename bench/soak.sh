#!/usr/bin/env bash
# soak.sh: bootd under a long run of mini boot storms and hostile probes,
# on loopback. Every round (one a minute) NODES "nodes", each from its own
# 127.0.0.x address, fetch what a PXE boot fetches over TFTP (pxelinux
# config, kernel, initrd) with curl, then read their root over NFS
# (libnfs's nfs-ls and nfs-cat) and send a syslog line; meanwhile
# bench/soak_probe.py runs the hostile review's probes (never-acknowledged
# netascii requests, NFS record marks that promise 4 MiB, connection and
# request floods, a syslog line of 16 MiB). bootd's RSS, open fds, threads
# and goroutines (STATE/run/stats.json) are sampled once a minute.
#
# At the end it prints the series and says whether each stayed flat: the
# median of the last quarter of samples is within 20% (plus a small slack)
# of the median of the second quarter (the first is warm-up). Storm
# transfers that failed are counted.
#
# Usage: bash bench/soak.sh      (as root; SOAK_MIN=30 NODES=16 by default)
# Output: bench/out/soak/ (series.csv, bootd.log, probes.log, storm.log).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/bench/out/soak
SOAK_MIN=${SOAK_MIN:-30}
NODES=${NODES:-16}
TPORT=${TPORT:-6979}
NPORT=${NPORT:-20499}
SPORT=${SPORT:-5149}

need=()
for p in curl libnfs-utils bsdutils python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

rm -rf "$OUT"
mkdir -p "$OUT"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "soak: building bootd and a synthetic generation"
CGO_ENABLED=0 go build -o "$OUT/bootd" ./cmd/bootd
STATE=$OUT/state
GEN=$STATE/images/soak/1
mkdir -p "$GEN/boot"
for d in $(seq 0 49); do
  mkdir -p "$GEN/root/usr/lib/d$d"
  for f in $(seq 0 99); do echo "file $d/$f" >"$GEN/root/usr/lib/d$d/f$f"; done
done
mkdir -p "$GEN/root/etc"
echo soak >"$GEN/root/etc/hostname"
head -c $((8 << 20)) /dev/urandom >"$GEN/boot/vmlinuz"
head -c $((24 << 20)) /dev/urandom >"$GEN/boot/initrd.img"
ln -sfn 1 "$STATE/images/soak/current"

cat >"$OUT/bootd.yaml" <<EOF
state_dir: $STATE
interface: lo
dhcp: {mode: "off"}
tftp: {listen: "127.0.0.1:$TPORT"}
nfs:
  listen: "127.0.0.1:$NPORT"
  allow: ["127.0.0.0/8"]
  secure_ports: false
  max_connections_per_client: 64
syslog: {listen: "127.0.0.1:$SPORT", allow: ["127.0.0.0/8"], max_file_mb: 4}
defaults: {image: soak}
unknown_nodes: boot
EOF
"$OUT/bootd" serve --config "$OUT/bootd.yaml" >"$OUT/bootd.log" 2>&1 &
BOOTD=$!
pids+=("$BOOTD")
for _ in $(seq 50); do
  [ -s "$STATE/run/stats.json" ] && break
  sleep 0.2
done

sample() { # minute
  local rss fds thr gor heap
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$BOOTD/status")
  thr=$(awk '/^Threads/ {print $2}' "/proc/$BOOTD/status")
  fds=$(ls "/proc/$BOOTD/fd" | wc -l)
  gor=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["goroutines"])' "$STATE/run/stats.json")
  heap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["heap_bytes"]>>10)' "$STATE/run/stats.json")
  echo "$1,$rss,$fds,$thr,$gor,$heap,$storm_ok,$storm_failed" | tee -a "$OUT/series.csv"
}

node() { # i: one node's boot traffic
  local i=$1 ip=127.0.0.$((10 + $1)) mac
  mac=$(printf '01-52-54-00-5a-00-%02x' "$i")
  local t="tftp://127.0.0.1:$TPORT"
  curl -sf --max-time 60 --interface "$ip" "$t/pxelinux.cfg/$mac" -o /dev/null &&
    curl -sf --max-time 120 --interface "$ip" --tftp-blksize 1468 "$t/images/soak/1/vmlinuz" -o /dev/null &&
    curl -sf --max-time 120 --interface "$ip" --tftp-blksize 1468 "$t/images/soak/1/initrd.img" -o /dev/null &&
    nfs-ls -R "nfs://127.0.0.1/soak/1/usr/lib/d$((i % 50))?version=3&nfsport=$NPORT&mountport=$NPORT" >/dev/null &&
    nfs-cat "nfs://127.0.0.1/soak/1/etc/hostname?version=3&nfsport=$NPORT&mountport=$NPORT" >/dev/null &&
    logger -T -n 127.0.0.1 -P "$SPORT" "soak node $i round $round"
}

echo "minute,rss_kib,fds,threads,goroutines,heap_kib,storm_ok,storm_failed" >"$OUT/series.csv"
storm_ok=0
storm_failed=0
start=$(date +%s)
sample 0
for round in $(seq 1 "$SOAK_MIN"); do
  t0=$(date +%s)
  python3 bench/soak_probe.py "$TPORT" "$NPORT" "$SPORT" >>"$OUT/probes.log" 2>&1 &
  probe=$!
  npids=()
  for i in $(seq 1 "$NODES"); do
    node "$i" >>"$OUT/storm.log" 2>&1 &
    npids+=($!)
  done
  for p in "${npids[@]}"; do
    if wait "$p"; then storm_ok=$((storm_ok + 1)); else storm_failed=$((storm_failed + 1)); fi
  done
  wait "$probe" || true
  kill -0 "$BOOTD" 2>/dev/null || { echo "soak: bootd died; see $OUT/bootd.log"; exit 1; }
  left=$((t0 + 60 - $(date +%s)))
  ((left > 0)) && sleep "$left"
  sample "$round"
done

echo
echo "soak: $SOAK_MIN rounds in $(($(date +%s) - start)) s; node boots ok $storm_ok, failed $storm_failed"
python3 - "$OUT/series.csv" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
n = len(rows)
q = max(1, n // 4)
verdict = 0
for col, slack in (("rss_kib", 8192), ("fds", 8), ("threads", 4), ("goroutines", 16), ("heap_kib", 8192)):
    vals = [int(r[col]) for r in rows]
    early = statistics.median(vals[q:2 * q] or vals)
    late = statistics.median(vals[-q:])
    flat = late <= early * 1.2 + slack
    verdict |= not flat
    print("%-10s min %8d max %8d  2nd-quarter median %8d  last-quarter median %8d  %s"
          % (col, min(vals), max(vals), early, late, "flat" if flat else "GROWING"))
sys.exit(verdict)
EOF
