#!/usr/bin/env bash
# tftp.sh: bootd's TFTP server against tftpd-hpa on loopback, with curl as
# the client, in one run:
#   - one client fetching a 64 MiB kernel at blksize 512 and 1468
#     (median of RUNS runs, MiB/s);
#   - a storm of CLIENTS concurrent clients each fetching a 16 MiB initrd
#     at blksize 1468 and 512 (aggregate MiB/s, failures counted);
#   - the sha256 of a file fetched from each server against the source.
# Both servers serve the same bytes at the same URL path
# (images/bench/1/{vmlinuz,initrd.img}); tftpd-hpa's tree holds hard links
# to the files in bootd's image store.
#
# Servers are pinned to CPU $SERVER_CPU and clients to CPU $CLIENT_CPU with
# taskset (bootd's Go runtime then runs with GOMAXPROCS=1, and every
# tftpd-hpa child inherits the same single CPU). Only 127.0.0.1 is used.
#
# Usage: bash bench/tftp.sh   (as root; safe to run again)
# Knobs (environment): RUNS=5 CLIENTS=32 BOOTD_PORT=6969 HPA_PORT=6970
#   SERVER_CPU=0 CLIENT_CPU=1 KERNEL_MIB=64 INITRD_MIB=16
# Raw output: bench/out/tftp/ (gitignored).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/bench/out/tftp
RUNS=${RUNS:-5}
CLIENTS=${CLIENTS:-32}
BOOTD_PORT=${BOOTD_PORT:-6969}
HPA_PORT=${HPA_PORT:-6970}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
KERNEL_MIB=${KERNEL_MIB:-64}
INITRD_MIB=${INITRD_MIB:-16}
CURL_MAX_TIME=300 # seconds; bounds every transfer

# --- dependencies -----------------------------------------------------------
need=()
for p in tftpd-hpa curl coreutils util-linux; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

mkdir -p "$OUT"
RAW=$OUT/raw.txt
: >"$RAW"
log() { echo "$*" | tee -a "$RAW"; }

# --- processes we start, ended by PID on exit ---------------------------------
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- wait for other benchmarks ------------------------------------------------
# The character class keeps pgrep from matching a shell whose own command
# line holds this pattern.
waited=0
while pgrep -f 'bench/[n]fs\.sh' >/dev/null; do
  if ((waited == 0)); then echo "waiting for bench/nfs.sh to finish..."; fi
  sleep 10
  waited=$((waited + 10))
  if ((waited > 3600)); then
    echo "bench/nfs.sh still running after an hour; giving up" >&2
    exit 1
  fi
done

for port in "$BOOTD_PORT" "$HPA_PORT"; do
  if ss -Huan "sport = :$port" | grep -q .; then
    echo "UDP port $port is in use; set BOOTD_PORT/HPA_PORT" >&2
    exit 1
  fi
done

# --- test files ------------------------------------------------------------------
STATE=$OUT/state
GEN=$STATE/images/bench/1
mkdir -p "$GEN/root" "$GEN/boot"
ln -sfn 1 "$STATE/images/bench/current"
mkfile() { # FILE MIB: random bytes, made once
  if [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" != $(($2 * 1048576)) ]; then
    head -c $(($2 * 1048576)) /dev/urandom >"$1.tmp"
    mv "$1.tmp" "$1"
  fi
}
mkfile "$GEN/boot/vmlinuz" "$KERNEL_MIB"
mkfile "$GEN/boot/initrd.img" "$INITRD_MIB"
chmod 644 "$GEN/boot/vmlinuz" "$GEN/boot/initrd.img"

# tftpd-hpa's tree: the same bytes at the same relative names as bootd's
# virtual tree. Hard links, so no copy; tftpd-hpa chroots into HPA_DIR and
# drops to nobody, so the tree must be world-readable.
HPA_DIR=$OUT/hpa-root
mkdir -p "$HPA_DIR/images/bench/1"
for f in vmlinuz initrd.img; do
  ln -f "$GEN/boot/$f" "$HPA_DIR/images/bench/1/$f"
done
chmod 755 "$HPA_DIR" "$HPA_DIR/images" "$HPA_DIR/images/bench" "$HPA_DIR/images/bench/1"

# --- servers ----------------------------------------------------------------------
echo "building bootd..."
go build -o "$OUT/bootd" ./cmd/bootd
cat >"$OUT/bootd.yaml" <<EOF
state_dir: $STATE
interface: lo
dhcp: {mode: "off"}
tftp: {listen: "127.0.0.1:$BOOTD_PORT"}
nfs: {listen: ""}
defaults: {image: bench, console: "ttyS0,115200n8"}
unknown_nodes: boot
EOF
taskset -c "$SERVER_CPU" "$OUT/bootd" serve --config "$OUT/bootd.yaml" >"$OUT/bootd.log" 2>&1 &
pids+=($!)
taskset -c "$SERVER_CPU" in.tftpd -L -a "127.0.0.1:$HPA_PORT" -s "$HPA_DIR" >"$OUT/tftpd-hpa.log" 2>&1 &
pids+=($!)

url() { # SERVER FILE
  local port=$BOOTD_PORT
  [ "$1" = hpa ] && port=$HPA_PORT
  echo "tftp://127.0.0.1:$port/images/bench/1/$2"
}
# fetch SERVER FILE BLKSIZE DEST: prints "bytes seconds", fails with curl
fetch() {
  taskset -c "$CLIENT_CPU" curl -s --max-time "$CURL_MAX_TIME" --tftp-blksize "$3" \
    -o "$4" -w '%{size_download} %{time_total}\n' "$(url "$1" "$2")"
}

# Wait until both answer.
for s in bootd hpa; do
  ok=0
  for _ in $(seq 50); do
    if fetch "$s" initrd.img 1468 /dev/null >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  if ((ok == 0)); then
    echo "$s does not answer TFTP; logs in $OUT" >&2
    cat "$OUT/bootd.log" "$OUT/tftpd-hpa.log" >&2
    exit 1
  fi
done

log "# bench/tftp.sh $(date -u +%FT%TZ)"
log "# bootd $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty'), $(go version | cut -d' ' -f3)"
log "# $(in.tftpd -V 2>&1 | head -1); $(curl --version | head -1 | cut -d' ' -f1-2)"
log "# $(nproc) CPUs; servers pinned to CPU $SERVER_CPU, clients (curl) to CPU $CLIENT_CPU (taskset)"
log "# loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- integrity ---------------------------------------------------------------------
for f in vmlinuz initrd.img; do
  want=$(sha256sum "$GEN/boot/$f" | cut -d' ' -f1)
  for s in bootd hpa; do
    fetch "$s" "$f" 1468 "$OUT/$s.$f" >/dev/null
    got=$(sha256sum "$OUT/$s.$f" | cut -d' ' -f1)
    rm -f "$OUT/$s.$f"
    if [ "$got" != "$want" ]; then
      log "sha256 MISMATCH: $s $f: got $got want $want"
      exit 1
    fi
    log "sha256 ok: $s $f $got"
  done
done

# --- single client -------------------------------------------------------------------
mibs() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.2f", b / t / 1048576 }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A result
for bs in 512 1468; do
  for s in bootd hpa; do : >"$OUT/single.$s.$bs"; done
  for r in $(seq "$RUNS"); do
    # Alternate the servers run by run, so drift hits both alike.
    for s in bootd hpa; do
      read -r bytes secs < <(fetch "$s" vmlinuz "$bs" /dev/null)
      if [ "$bytes" != $((KERNEL_MIB * 1048576)) ]; then
        log "single $s blksize $bs run $r: short transfer ($bytes bytes)"
        exit 1
      fi
      m=$(mibs "$bytes" "$secs")
      echo "$m" >>"$OUT/single.$s.$bs"
      log "single blksize=$bs run=$r $s: $bytes bytes in ${secs}s = $m MiB/s"
    done
  done
  for s in bootd hpa; do
    result["single$bs.$s"]=$(median <"$OUT/single.$s.$bs")
  done
done

# --- storm ----------------------------------------------------------------------------
# storm SERVER BLKSIZE: CLIENTS curls at once, all on the client CPU.
# Sets storm_mibs and storm_fail.
storm() {
  local s=$1 bs=$2 dir=$OUT/storm.$1.$2 i t0 t1 fail=0 bytes=0 rc b
  rm -rf "$dir"
  mkdir -p "$dir"
  local spids=()
  t0=$(date +%s.%N)
  for i in $(seq "$CLIENTS"); do
    (
      set +e
      fetch "$s" initrd.img "$bs" /dev/null >"$dir/$i.out" 2>"$dir/$i.err"
      echo $? >"$dir/$i.rc"
    ) &
    spids+=($!)
  done
  for i in "${spids[@]}"; do wait "$i"; done
  t1=$(date +%s.%N)
  for i in $(seq "$CLIENTS"); do
    rc=$(cat "$dir/$i.rc")
    b=$(cut -d' ' -f1 "$dir/$i.out" 2>/dev/null || echo 0)
    b=${b:-0}
    if [ "$rc" != 0 ] || [ "$b" != $((INITRD_MIB * 1048576)) ]; then
      fail=$((fail + 1))
      log "storm $s blksize=$bs client $i: curl rc=$rc bytes=$b"
    else
      bytes=$((bytes + b))
    fi
  done
  storm_mibs=$(awk -v b="$bytes" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f", b / (t1 - t0) / 1048576 }')
  storm_fail=$fail
  log "storm blksize=$bs $s: $CLIENTS clients x $INITRD_MIB MiB, $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')s wall, $storm_mibs MiB/s aggregate, $fail failed"
}

for bs in 1468 512; do
  for s in bootd hpa; do
    storm "$s" "$bs"
    result["storm$bs.$s"]=$storm_mibs
    result["stormfail$bs.$s"]=$storm_fail
  done
done

# --- bootd's log -------------------------------------------------------------------------
warn=$(grep -cE 'level=(WARN|ERROR)' "$OUT/bootd.log" || true)
log "bootd log: $(wc -l <"$OUT/bootd.log") lines, $warn WARN/ERROR"
grep -E 'level=(WARN|ERROR)' "$OUT/bootd.log" | head -20 | tee -a "$RAW" || true

# --- table ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
{
  echo
  echo "TFTP on 127.0.0.1, servers on CPU $SERVER_CPU, curl on CPU $CLIENT_CPU (taskset)"
  printf '%-40s | %-16s | %-16s | %s\n' test bootd tftpd-hpa "ratio (bootd/tftpd-hpa)"
  printf '%-40s-+-%-16s-+-%-16s-+-%s\n' "$(printf -- '-%.0s' {1..40})" "$(printf -- '-%.0s' {1..16})" "$(printf -- '-%.0s' {1..16})" "-----------------------"
  for bs in 512 1468; do
    printf '%-40s | %-16s | %-16s | %s\n' "single $KERNEL_MIB MiB, blksize $bs (median of $RUNS)" \
      "${result[single$bs.bootd]} MiB/s" "${result[single$bs.hpa]} MiB/s" "$(ratio "${result[single$bs.bootd]}" "${result[single$bs.hpa]}")"
  done
  for bs in 1468 512; do
    printf '%-40s | %-16s | %-16s | %s\n' "storm $CLIENTS x $INITRD_MIB MiB, blksize $bs" \
      "${result[storm$bs.bootd]} MiB/s" "${result[storm$bs.hpa]} MiB/s" "$(ratio "${result[storm$bs.bootd]}" "${result[storm$bs.hpa]}")"
    printf '%-40s | %-16s | %-16s |\n' "  failed transfers" "${result[stormfail$bs.bootd]}/$CLIENTS" "${result[stormfail$bs.hpa]}/$CLIENTS"
  done
  echo "goals: single >= 1.0x, storm >= 1.2x"
} | tee "$OUT/table.txt" | tee -a "$RAW"
