#!/usr/bin/env bash
# tftp.sh: bootd's TFTP server against tftpd-hpa on loopback, with curl as
# the client, in one run:
#   - one client fetching a 64 MiB kernel at blksize 512 and 1468
#     (median of RUNS runs, MiB/s, and the median of the per-run ratios);
#     then again with curl on the server's CPU (SAME_CPU=1);
#   - a storm of CLIENTS concurrent clients each fetching a 16 MiB initrd
#     at blksize 1468 and 512 (aggregate MiB/s, median of STORM_RUNS;
#     failures counted; the server's CPU time per storm);
#   - the sha256 of a file fetched from each server against the source.
# Both servers serve the same bytes at the same URL path
# (images/bench/1/{vmlinuz,initrd.img}); tftpd-hpa's tree holds hard links
# to the files in bootd's image store.
#
# Clients are pinned to CPU $CLIENT_CPU with taskset. Each server runs twice:
# pinned to CPU $SERVER_CPU (bootd's Go runtime then has GOMAXPROCS=1, and
# every tftpd-hpa child inherits the same single CPU), which measures what
# a server does with one CPU, and free on all CPUs, the way a master runs
# them. bootd busy-polls for ACKs only with two CPUs or more (tftp.busy_poll),
# so the pinned bootd never does. Single-client runs are made against both
# pairs, storms against the pinned pair. Only 127.0.0.1 is used.
#
# Usage: bash bench/tftp.sh   (as root; safe to run again)
# Knobs (environment): RUNS=5 CLIENTS=32 STORM_RUNS=3 SAME_CPU=1 BOOTD_PORT=6969 HPA_PORT=6970
#   (the free servers use BOOTD_PORT+10 and HPA_PORT+10)
#   SERVER_CPU=0 CLIENT_CPU=1 KERNEL_MIB=64 INITRD_MIB=16
# Raw output: bench/out/tftp/ (gitignored).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/bench/out/tftp
RUNS=${RUNS:-5}
CLIENTS=${CLIENTS:-32}
STORM_RUNS=${STORM_RUNS:-3}
SAME_CPU=${SAME_CPU:-1}
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

# --- wait for other benchmarks and a quiet machine ----------------------------
# shellcheck source=bench/quiet.sh
source "$ROOT/bench/quiet.sh"

for port in "$BOOTD_PORT" "$HPA_PORT" $((BOOTD_PORT + 10)) $((HPA_PORT + 10)); do
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
sed "s/:$BOOTD_PORT\"/:$((BOOTD_PORT + 10))\"/" "$OUT/bootd.yaml" >"$OUT/bootd-free.yaml"
taskset -c "$SERVER_CPU" "$OUT/bootd" serve --config "$OUT/bootd.yaml" >"$OUT/bootd.log" 2>&1 &
pids+=($!)
taskset -c "$SERVER_CPU" in.tftpd -L -a "127.0.0.1:$HPA_PORT" -s "$HPA_DIR" >"$OUT/tftpd-hpa.log" 2>&1 &
pids+=($!)
"$OUT/bootd" serve --config "$OUT/bootd-free.yaml" >"$OUT/bootd-free.log" 2>&1 &
pids+=($!)
in.tftpd -L -a "127.0.0.1:$((HPA_PORT + 10))" -s "$HPA_DIR" >"$OUT/tftpd-hpa-free.log" 2>&1 &
pids+=($!)
# cpu_ticks: busy clock ticks of the server CPU so far (tftpd-hpa forks a
# child per transfer and does not reap them into its own CPU times, so the
# pinned CPU is measured rather than the process).
cpu_ticks() { awk -v c="cpu$SERVER_CPU" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
TICK=$(getconf CLK_TCK)

url() { # SERVER FILE; SERVER is bootd, hpa, bootd-free or hpa-free
  local port=$BOOTD_PORT
  case $1 in
  hpa) port=$HPA_PORT ;;
  bootd-free) port=$((BOOTD_PORT + 10)) ;;
  hpa-free) port=$((HPA_PORT + 10)) ;;
  esac
  echo "tftp://127.0.0.1:$port/images/bench/1/$2"
}
# fetch SERVER FILE BLKSIZE DEST: prints "bytes seconds", fails with curl
fetch() {
  taskset -c "${FETCH_CPU:-$CLIENT_CPU}" curl -s --max-time "$CURL_MAX_TIME" --tftp-blksize "$3" \
    -o "$4" -w '%{size_download} %{time_total}\n' "$(url "$1" "$2")"
}

# Wait until all answer.
for s in bootd hpa bootd-free hpa-free; do
  ok=0
  for _ in $(seq 50); do
    if fetch "$s" initrd.img 1468 /dev/null >/dev/null 2>&1; then
      ok=1
      break
    fi
    sleep 0.2
  done
  if ((ok == 0)); then
    echo "$s does not answer TFTP; logs in $OUT" >&2
    cat "$OUT/bootd.log" "$OUT/tftpd-hpa.log" >&2
    exit 1
  fi
done

wait_quiet
log "# bench/tftp.sh $(date -u +%FT%TZ)"
log "# bootd $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty'), $(go version | cut -d' ' -f3)"
log "# $(in.tftpd -V 2>&1 | head -1); $(curl --version | head -1 | cut -d' ' -f1-2)"
log "# $(nproc) CPUs; one pair of servers pinned to CPU $SERVER_CPU, one free; clients (curl) on CPU $CLIENT_CPU (taskset)"
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

# single KEY BLKSIZE [SUFFIX]: RUNS pairs of runs (bootd, then tftpd-hpa;
# the free pair with SUFFIX=-free), each pair
# repeated while the machine got busy during it. Sets result[KEY.bootd],
# result[KEY.hpa] (median MiB/s) and result[KEY.ratio] (median of the
# per-pair ratios, which cancels drift between pairs).
single() {
  local key=$1 bs=$2 sfx=${3:-} r s bytes secs tries
  declare -A got
  for s in bootd hpa ratio; do : >"$OUT/$key.$s"; done
  for r in $(seq "$RUNS"); do
    tries=0
    while :; do
      wait_quiet
      for s in bootd hpa; do
        read -r bytes secs < <(fetch "$s$sfx" vmlinuz "$bs" /dev/null)
        if [ "$bytes" != $((KERNEL_MIB * 1048576)) ]; then
          log "$key $s run $r: short transfer ($bytes bytes)"
          exit 1
        fi
        got[$s]=$(mibs "$bytes" "$secs")
        log "$key run=$r $s$sfx: $bytes bytes in ${secs}s = ${got[$s]} MiB/s"
      done
      redo_check "run $r" && break
    done
    for s in bootd hpa; do echo "${got[$s]}" >>"$OUT/$key.$s"; done
    awk -v a="${got[bootd]}" -v b="${got[hpa]}" 'BEGIN { printf "%.3f\n", a / b }' >>"$OUT/$key.ratio"
  done
  for s in bootd hpa ratio; do
    result["$key.$s"]=$(median <"$OUT/$key.$s")
  done
}

declare -A result
for bs in 512 1468; do
  single "single$bs" "$bs"
  single "free$bs" "$bs" -free
done
# The same with curl on the server's CPU: a TFTP transfer is a ping-pong,
# and across two vCPUs each packet waits for a cross-CPU wake-up; on one
# CPU the time per block is closer to the two processes' own CPU cost.
if [ "$SAME_CPU" = 1 ]; then
  for bs in 512 1468; do
    FETCH_CPU=$SERVER_CPU single "same$bs" "$bs"
  done
fi

# --- storm ----------------------------------------------------------------------------
# storm SERVER BLKSIZE: CLIENTS curls at once, all on the client CPU.
# Sets storm_mibs and storm_fail.
storm() {
  local s=$1 bs=$2 dir=$OUT/storm.$1.$2 i t0 t1 fail=0 bytes=0 rc b
  rm -rf "$dir"
  mkdir -p "$dir"
  local spids=() c0 c1
  c0=$(cpu_ticks)
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
  c1=$(cpu_ticks)
  storm_cpu=$(awk -v a="$c0" -v b="$c1" -v t="$TICK" 'BEGIN { printf "%.2f", (b - a) / t }')
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
  log "storm blksize=$bs $s: $CLIENTS clients x $INITRD_MIB MiB, $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')s wall, $storm_mibs MiB/s aggregate, $fail failed, server CPU (cpu$SERVER_CPU busy) ${storm_cpu}s"
}

# STORM_RUNS storms per server and blksize, alternating the servers; the
# median aggregate is reported, and failures are summed.
for bs in 1468 512; do
  for s in bootd hpa; do
    : >"$OUT/storm.$s.$bs.mibs"
    : >"$OUT/storm.$s.$bs.cpu"
    result["stormfail$bs.$s"]=0
  done
  for r in $(seq "$STORM_RUNS"); do
    for s in bootd hpa; do
      tries=0
      while :; do
        wait_quiet
        storm "$s" "$bs"
        redo_check "storm $s $bs" && break
      done
      echo "$storm_mibs" >>"$OUT/storm.$s.$bs.mibs"
      echo "$storm_cpu" >>"$OUT/storm.$s.$bs.cpu"
      result["stormfail$bs.$s"]=$((result["stormfail$bs.$s"] + storm_fail))
    done
  done
  for s in bootd hpa; do
    result["storm$bs.$s"]=$(median <"$OUT/storm.$s.$bs.mibs")
    result["stormcpu$bs.$s"]=$(median <"$OUT/storm.$s.$bs.cpu")
  done
  # Each round stormed bootd, then tftpd-hpa: the median of the per-round
  # ratios cancels the machine's drift between rounds, as for single.
  result["storm$bs.ratio"]=$(paste "$OUT/storm.bootd.$bs.mibs" "$OUT/storm.hpa.$bs.mibs" |
    awk '{ printf "%.3f\n", $1 / $2 }' | median)
done

# --- bootd's log -------------------------------------------------------------------------
warn=$(cat "$OUT/bootd.log" "$OUT/bootd-free.log" | grep -cE 'level=(WARN|ERROR)' || true)
log "bootd logs: $(cat "$OUT/bootd.log" "$OUT/bootd-free.log" | wc -l) lines, $warn WARN/ERROR"
grep -hE 'level=(WARN|ERROR)' "$OUT/bootd.log" "$OUT/bootd-free.log" | head -20 | tee -a "$RAW" || true

# --- table ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
{
  echo
  echo "TFTP on 127.0.0.1, servers on CPU $SERVER_CPU unless free, curl on CPU $CLIENT_CPU (taskset)"
  fmt='%-48s | %-13s | %-13s | %s\n'
  # shellcheck disable=SC2059 # the format is ours
  printf "$fmt" test bootd tftpd-hpa "ratio (bootd/tftpd-hpa)"
  printf "$fmt" "$(printf -- '-%.0s' {1..48})" "-------------" "-------------" "-----------------------"
  for bs in 512 1468; do
    printf "$fmt" "single $KERNEL_MIB MiB, blksize $bs (median of $RUNS)" \
      "${result[single$bs.bootd]} MiB/s" "${result[single$bs.hpa]} MiB/s" \
      "$(ratio "${result[single$bs.bootd]}" "${result[single$bs.hpa]}") (median of pair ratios ${result[single$bs.ratio]}x)"
    printf "$fmt" "  the same, servers free on all CPUs" \
      "${result[free$bs.bootd]} MiB/s" "${result[free$bs.hpa]} MiB/s" \
      "$(ratio "${result[free$bs.bootd]}" "${result[free$bs.hpa]}") (median of pair ratios ${result[free$bs.ratio]}x)"
  done
  for bs in 1468 512; do
    printf "$fmt" "storm $CLIENTS x $INITRD_MIB MiB, blksize $bs (median of $STORM_RUNS)" \
      "${result[storm$bs.bootd]} MiB/s" "${result[storm$bs.hpa]} MiB/s" \
      "$(ratio "${result[storm$bs.bootd]}" "${result[storm$bs.hpa]}") (median of pair ratios ${result[storm$bs.ratio]}x)"
    printf "$fmt" "  failed transfers (of $((CLIENTS * STORM_RUNS)))" "${result[stormfail$bs.bootd]}" "${result[stormfail$bs.hpa]}" ""
    printf "$fmt" "  server CPU s per storm (CPU $SERVER_CPU busy; median)" "${result[stormcpu$bs.bootd]} s" "${result[stormcpu$bs.hpa]} s" \
      "$(ratio "${result[stormcpu$bs.bootd]}" "${result[stormcpu$bs.hpa]}")"
  done
  if [ "$SAME_CPU" = 1 ]; then
    for bs in 512 1468; do
      printf "$fmt" "single, curl on the server's CPU $SERVER_CPU, blksize $bs" \
        "${result[same$bs.bootd]} MiB/s" "${result[same$bs.hpa]} MiB/s" \
        "$(ratio "${result[same$bs.bootd]}" "${result[same$bs.hpa]}") (median of pair ratios ${result[same$bs.ratio]}x)"
    done
  fi
  echo "goals: single >= 1.0x, storm >= 1.2x"
  echo "measurements kept although the machine was busy right after them: $disturbed (each was retried $MAX_REDO times first)"
} | tee "$OUT/table.txt" | tee -a "$RAW"
