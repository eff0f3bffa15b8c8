#!/usr/bin/env bash
# dhcp.sh: DHCP throughput and latency of bootd, with Kea's perfdhcp as the
# load generator, between two network namespaces joined by a veth pair:
#
#   bench-dhcp-srv: bench-dhcp-s 10.215.0.1/16   (bootd or dnsmasq, CPU 0)
#   bench-dhcp-cli: bench-dhcp-c 10.215.0.2/16   (perfdhcp etc., CPU 1)
#
# Runs, each at RATES exchanges/s for DURATION s, 10,000 distinct MACs, every
# DISCOVER a BIOS PXE client (option 60 "PXEClient:Arch:00000:UNDI:002001",
# option 93 arch 0):
#   1. bootd dhcp.mode proxy, DISCOVER-OFFER (perfdhcp -i): drops and
#      perfdhcp's min/avg/max/stddev delay; then the same again under a
#      packet capture on the client's veth, from which p50/p99 are taken
#      (perfdhcp 2.2 has no percentiles, and its -x t timer dump aborts
#      with "Packets exchange not specified" in -i mode, as -W does).
#   2. bootd proxy, broadcast path: perfdhcp always poses as a relay (giaddr
#      = its own address, hops 1), so bootd answers it by unicast to
#      giaddr:67 and never takes the broadcast-to-255.255.255.255:68 path
#      real PXE ROMs get. A small Python client (stdlib only) sends
#      DISCOVERs with giaddr 0 from port 68 and counts the broadcast
#      OFFERs.
#   3. bootd dhcp.mode full (range of ~64k addresses in a /16) and dnsmasq
#      (--leasefile-ro --no-ping) as a full server: DISCOVER-OFFER and
#      DISCOVER-OFFER-REQUEST-ACK.
# Only the two namespaces carry traffic; nothing leaves them.
#
# Usage: bash bench/dhcp.sh   (as root; safe to run again)
# Knobs: RATES="1000 2000 4000 8000" EXTRA_RATES="16000" PROXY_REPEAT=3
#   FULL_RATES="250 500 1000 2000 4000 8000" DURATION=10
#   SERVER_CPU=0 CLIENT_CPU=1 CLIENTS=10000 SKIP_FULL=0 BOOTD_LOG_LEVEL=info
#   BENCH_OUT=bench/out/dhcp
# Raw output: bench/out/dhcp/ (gitignored).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out/dhcp}
RATES=${RATES:-"1000 2000 4000 8000"}
EXTRA_RATES=${EXTRA_RATES:-"16000"} # tried for proxy only when the last of RATES was clean
PROXY_REPEAT=${PROXY_REPEAT:-3}     # runs per proxy rate
FULL_RATES=${FULL_RATES:-"250 500 1000 2000 4000 8000"}
DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CLIENTS=${CLIENTS:-10000}
SKIP_FULL=${SKIP_FULL:-0}
BOOTD_LOG_LEVEL=${BOOTD_LOG_LEVEL:-info} # bootd logs every proxy OFFER at info
SRV_NS=bench-dhcp-srv
CLI_NS=bench-dhcp-cli
SRV_IF=bench-dhcp-s
CLI_IF=bench-dhcp-c
SRV_IP=10.215.0.1
CLI_IP=10.215.0.2
PY=/usr/bin/python3
# "PXEClient:Arch:00000:UNDI:002001" and arch 0 (BIOS)
O60=505845436c69656e743a417263683a30303030303a554e44493a303032303031
O93=0000

# --- dependencies -----------------------------------------------------------
need=()
for p in kea-admin dnsmasq-base tcpdump iproute2 util-linux python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v perfdhcp >/dev/null || export PATH="$PATH:/usr/sbin:/sbin"

mkdir -p "$OUT"
RAW=$OUT/raw.txt
: >"$RAW"
log() { echo "$*" | tee -a "$RAW"; }

# --- cleanup: processes by PID, then our namespaces ----------------------------
server_pid=
cap_pid=
teardown_net() {
  ip netns del "$SRV_NS" 2>/dev/null || true
  ip netns del "$CLI_NS" 2>/dev/null || true
  ip link del "$SRV_IF" 2>/dev/null || true
}
cleanup() {
  local p
  for p in $server_pid $cap_pid; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  teardown_net
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- wait for other benchmarks and a quiet machine ----------------------------
# shellcheck source=bench/quiet.sh
source "$ROOT/bench/quiet.sh"

# --- network --------------------------------------------------------------------
teardown_net
ip netns add "$SRV_NS"
ip netns add "$CLI_NS"
ip link add "$SRV_IF" type veth peer name "$CLI_IF"
ip link set "$SRV_IF" netns "$SRV_NS"
ip link set "$CLI_IF" netns "$CLI_NS"
ip -n "$SRV_NS" addr add "$SRV_IP/16" dev "$SRV_IF"
ip -n "$CLI_NS" addr add "$CLI_IP/16" dev "$CLI_IF"
for ns in "$SRV_NS" "$CLI_NS"; do
  ip -n "$ns" link set lo up
done
ip -n "$SRV_NS" link set "$SRV_IF" up
ip -n "$CLI_NS" link set "$CLI_IF" up
# Foreground only: a function run with & is a subshell, and $! would not be
# the server's PID.
in_srv() { ip netns exec "$SRV_NS" "$@"; }
in_cli() { ip netns exec "$CLI_NS" "$@"; }

# --- bootd ------------------------------------------------------------------------
echo "building bootd..."
go build -o "$OUT/bootd" ./cmd/bootd
STATE=$OUT/state
mkdir -p "$STATE/images/bench/1/root" "$STATE/images/bench/1/boot"
: >"$STATE/images/bench/1/boot/vmlinuz"
: >"$STATE/images/bench/1/boot/initrd.img"
ln -sfn 1 "$STATE/images/bench/current"

write_bootd_config() { # MODE FILE
  {
    echo "state_dir: $STATE"
    echo "interface: $SRV_IF"
    if [ "$1" = full ]; then
      echo "dhcp: {mode: full, subnet: 10.215.0.0/16, range: [10.215.1.0, 10.215.254.254], relays: [$CLI_IP]}"
    else
      echo "dhcp: {mode: proxy, relays: [$CLI_IP]}"
    fi
    echo 'tftp: {listen: ""}'
    echo 'nfs: {listen: ""}'
    echo 'defaults: {image: bench, console: "ttyS0,115200n8"}'
    echo 'unknown_nodes: boot'
  } >"$2"
}

# start_server KIND TAG: bootd-proxy, bootd-full or dnsmasq, fresh state.
start_server() {
  local kind=$1 tag=$2 logf=$OUT/server.$2.log
  rm -rf "$STATE/dhcp"
  if in_srv ss -Huan 'sport = :67' | grep -q .; then
    echo "port 67 in $SRV_NS is still taken" >&2
    exit 1
  fi
  case $kind in
  bootd-proxy | bootd-full)
    write_bootd_config "${kind#bootd-}" "$OUT/bootd-${kind#bootd-}.yaml"
    ip netns exec "$SRV_NS" taskset -c "$SERVER_CPU" "$OUT/bootd" serve --log-level "$BOOTD_LOG_LEVEL" \
      --config "$OUT/bootd-${kind#bootd-}.yaml" >"$logf" 2>&1 &
    ;;
  dnsmasq)
    ip netns exec "$SRV_NS" taskset -c "$SERVER_CPU" dnsmasq --keep-in-foreground --conf-file=/dev/null --pid-file= \
      --port=0 --interface="$SRV_IF" --bind-interfaces \
      --dhcp-range=10.215.1.0,10.215.254.254,255.255.0.0,12h --dhcp-lease-max=200000 \
      --dhcp-boot=pxelinux.0 --leasefile-ro --no-ping --log-facility=- >"$logf" 2>&1 &
    ;;
  esac
  server_pid=$!
  local i
  for i in $(seq 50); do
    if in_srv ss -Huan 'sport = :67' | grep -q .; then return 0; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "$kind did not start; its log:" >&2
  cat "$logf" >&2 || true
  exit 1
}
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

udp_counters() { # NS: "InDatagrams RcvbufErrors InErrors" of the namespace
  ip netns exec "$1" awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) k[$i] = i; h = 1 } else print $k["InDatagrams"], $k["RcvbufErrors"], $k["InErrors"] }' /proc/net/snmp
}

# perf TAG RATE do|dora: one perfdhcp run; raw output to perf.TAG.RATE.txt.
perf() {
  local tag=$1 rate=$2 ex=$3 f=$OUT/perf.$1.$2.txt rc=0
  # Bounded by -p alone: perfdhcp 2.2 with -i aborts its report ("Packets
  # exchange not specified") when -W is given, and with -n it exits right
  # after the last DISCOVER, counting that one as dropped.
  local args=(-4 -l "$CLI_IF" -r "$rate" -R "$CLIENTS" -p "$DURATION" -o "60,$O60" -o "93,$O93")
  [ "$ex" = "do" ] && args+=(-i)
  local s0 c0 s1 c1
  s0=$(udp_counters "$SRV_NS")
  c0=$(udp_counters "$CLI_NS")
  {
    echo "\$ ip netns exec $CLI_NS taskset -c $CLIENT_CPU perfdhcp ${args[*]}"
    in_cli taskset -c "$CLIENT_CPU" perfdhcp "${args[@]}" 2>&1 || rc=$?
    echo "perfdhcp exit status: $rc"
  } >"$f"
  s1=$(udp_counters "$SRV_NS")
  c1=$(udp_counters "$CLI_NS")
  # server UDP: datagrams in, receive-buffer overflows
  udp_delta=$(awk -v a="$s0" -v b="$s1" -v c="$c0" -v d="$c1" 'BEGIN {
    split(a, x); split(b, y); split(c, u); split(d, v)
    printf "srv in=%d rcvbuf_err=%d; cli in=%d rcvbuf_err=%d", y[1]-x[1], y[2]-x[2], v[1]-u[1], v[2]-u[2] }')
  echo "udp counters: $udp_delta" >>"$f"
}

# stats FILE SECTION: "sent recv drops orphans min avg max std" of a section
# ("DISCOVER-OFFER" or "REQUEST-ACK") of a perfdhcp report.
stats() {
  awk -v sec="$2" '
    /\*\*\*Statistics for: / { on = index($0, sec) > 0 }
    on && /^sent packets:/ { s = $3 } on && /^received packets:/ { r = $3 }
    on && /^drops:/ { d = $2 } on && /^orphans:/ { o = $2 }
    on && /^min delay:/ { mn = $3 } on && /^avg delay:/ { av = $3 }
    on && /^max delay:/ { mx = $3 } on && /^std deviation:/ { sd = $3 }
    END { printf "%s %s %s %s %s %s %s %s\n", s, r, d, o, mn, av, mx, sd }' "$1"
}
achieved() { awk '/^Rate:/ { print $2; exit }' "$1"; }

# --- pcap latency (stdlib Python): matches requests (op 1) to replies (op 2)
# by xid on the client's veth; prints "matched p50 p90 p99 max" in ms.
cat >"$OUT/pcaplat.py" <<'EOF'
import struct, sys
lat, sent = [], {}
with open(sys.argv[1], "rb") as f:
    hdr = f.read(24)
    magic = struct.unpack("<I", hdr[:4])[0]
    nano = magic == 0xA1B23C4D
    while True:
        rh = f.read(16)
        if len(rh) < 16:
            break
        sec, frac, incl, _ = struct.unpack("<IIII", rh)
        pkt = f.read(incl)
        ts = sec + frac / (1e9 if nano else 1e6)
        if len(pkt) < 14 + 20 + 8 + 8 or pkt[12:14] != b"\x08\x00":
            continue
        ihl = (pkt[14] & 15) * 4
        b = 14 + ihl + 8
        if len(pkt) < b + 8:
            continue
        op, xid = pkt[b], pkt[b + 4:b + 8]
        if op == 1:
            sent.setdefault(xid, ts)
        elif op == 2 and xid in sent:
            lat.append((ts - sent.pop(xid)) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(len(lat), "%.3f %.3f %.3f %.3f" % (q(0.50), q(0.90), q(0.99), lat[-1] if lat else float("nan")))
EOF

# capture_perf TAG RATE: perfdhcp DO under tcpdump on the client veth.
# Sets cap_lat="matched p50 p90 p99 max" and cap_stats.
capture_perf() {
  local tag=$1 rate=$2 pcap=$OUT/cap.$1.$2.pcap
  rm -f "$pcap"
  ip netns exec "$CLI_NS" taskset -c "$CLIENT_CPU" tcpdump -i "$CLI_IF" -n -s 64 -B 32768 -w "$pcap" 'udp port 67 or udp port 68' \
    2>"$OUT/cap.$tag.$rate.tcpdump.txt" &
  cap_pid=$!
  local i
  for i in $(seq 50); do
    grep -q listening "$OUT/cap.$tag.$rate.tcpdump.txt" 2>/dev/null && break
    sleep 0.1
  done
  perf "$tag-cap" "$rate" "do"
  # tcpdump hands packets over a block at a time (1 s timeout): give it the
  # last block before stopping it, or the run's last ~0.1 s is missing.
  sleep 1.5
  kill -INT "$cap_pid" 2>/dev/null || true
  wait "$cap_pid" 2>/dev/null || true
  cap_pid=
  cap_lat=$("$PY" "$OUT/pcaplat.py" "$pcap")
  cap_stats=$(stats "$OUT/perf.$tag-cap.$rate.txt" DISCOVER-OFFER)
  rm -f "$pcap"
}

# --- broadcast-path client (stdlib Python) -----------------------------------------
# Sends DISCOVERs with giaddr 0 from port 68 to 255.255.255.255:67, as a PXE
# ROM does, and counts the OFFERs bootd broadcasts to port 68. Prints
# "sent answered drops p50 p99 max_ms achieved_rate".
cat >"$OUT/bcast.py" <<'EOF'
import os, random, select, socket, struct, sys, time
iface, rate, dur, nmacs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", 68))
s.setblocking(False)
opts = bytes([53, 1, 1, 60, 32]) + b"PXEClient:Arch:00000:UNDI:002001" + bytes([93, 2, 0, 0, 255])
rnd = random.Random(1)
def discover(xid):
    mac = bytes([0x02, 0x15, 0, 0]) + struct.pack(">H", rnd.randrange(nmacs))
    b = struct.pack(">BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4), bytes(4),
                    bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))
    return b + b"\x63\x82\x53\x63" + opts
total = int(rate * dur)
sent, lat, xid, last_send = {}, [], 0x10000000, 0.0
start = time.monotonic()
deadline = start + dur + 2.0
while True:
    now = time.monotonic()
    due = min(total, int((now - start) * rate) + 1)
    while xid - 0x10000000 < due:
        try:
            s.sendto(discover(xid), ("255.255.255.255", 67))
            sent[xid] = time.monotonic()
        except BlockingIOError:
            break
        xid += 1
    if xid - 0x10000000 >= total and not last_send:
        last_send = time.monotonic()
    sent_all = xid - 0x10000000 >= total
    if sent_all and (not sent or now > deadline):
        break
    r, _, _ = select.select([s], [], [], 0.0005)
    if r:
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                break
            if len(data) >= 240 and data[0] == 2:
                x = struct.unpack(">I", data[4:8])[0]
                t = sent.pop(x, None)
                if t is not None:
                    lat.append((time.monotonic() - t) * 1000)
n = xid - 0x10000000
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
el = (last_send or time.monotonic()) - start
print(n, len(lat), n - len(lat), "%.3f %.3f %.3f" % (q(0.5), q(0.99), lat[-1] if lat else float("nan")), "%.0f" % (n / el))
EOF

log "# bench/dhcp.sh $(date -u +%FT%TZ)"
log "# bootd $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(go version | cut -d' ' -f3); perfdhcp $(perfdhcp -v 2>&1 | awk '{print $2}'); $(dnsmasq --version | head -1 | cut -d' ' -f1-3)"
log "# bootd --log-level $BOOTD_LOG_LEVEL"
log "# $(nproc) CPUs; server pinned to CPU $SERVER_CPU, clients (perfdhcp, tcpdump, python) to CPU $CLIENT_CPU (taskset)"
log "# veth $SRV_IF ($SRV_NS, $SRV_IP/16) <-> $CLI_IF ($CLI_NS, $CLI_IP/16); $CLIENTS MACs; ${DURATION}s per run"
log "# loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A row

# sweep TAG KIND EXCHANGE REPEAT RATES...: REPEAT runs per rate, one server
# start per run (fresh state). Rows go to row[TAG.RATE.RUN]:
# "DO stats|RA stats|achieved|srv_in srv_rcvbuf_err cli_in cli_rcvbuf_err".
sweep() {
  local tag=$1 kind=$2 ex=$3 repeat=$4 rate st st2 n id w
  shift 4
  for rate in "$@"; do
    for n in $(seq "$repeat"); do
      id=$tag.r$n
      tries=0
      while :; do
        wait_quiet
        start_server "$kind" "$id.$rate"
        perf "$id" "$rate" "$ex"
        st=$(stats "$OUT/perf.$id.$rate.txt" DISCOVER-OFFER)
        st2=
        [ "$ex" = dora ] && st2=$(stats "$OUT/perf.$id.$rate.txt" REQUEST-ACK)
        row["$tag.$rate.$n"]="$st|$st2|$(achieved "$OUT/perf.$id.$rate.txt")|$(echo "$udp_delta" | grep -o '[0-9]\+' | xargs)"
        log "$tag rate=$rate run=$n: DO sent recv drops orphans min avg max std = $st${st2:+; RA: $st2}; achieved $(achieved "$OUT/perf.$id.$rate.txt")/s; $udp_delta"
        if [ "$tag" = proxy ]; then
          capture_perf "$id" "$rate"
          row["$tag.$rate.$n.cap"]="$cap_lat|$cap_stats"
          log "$tag rate=$rate run=$n under capture: matched p50 p90 p99 max(ms) = $cap_lat; perfdhcp: $cap_stats"
        fi
        stop_server
        w=$(grep -cE 'level=(WARN|ERROR)' "$OUT/server.$id.$rate.log" || true)
        if [ "${w:-0}" != 0 ]; then
          log "  server log: $w WARN/ERROR lines, e.g.: $(grep -m1 -E 'level=(WARN|ERROR)' "$OUT/server.$id.$rate.log")"
        fi
        redo_check "$tag at $rate/s" && break
      done
    done
  done
}

# clean TAG RATE REPEAT: whether every run answered every DISCOVER (kernel
# UDP counters: datagrams into the client namespace = DISCOVERs sent) with
# no receive-buffer overflow at the server.
clean() {
  local n v
  for n in $(seq "$3"); do
    v=${row[$1.$2.$n]}
    [ "$(f "$v" 1 1)" = "$(f "$v" 4 3)" ] && [ "$(f "$v" 4 2)" = 0 ] || return 1
  done
}
f() { echo "$1" | cut -d'|' -f"$2" | cut -d' ' -f"$3"; }

# --- 1. proxy, relay path (perfdhcp) --------------------------------------------
read -ra proxy_rates <<<"$RATES"
sweep proxy bootd-proxy "do" "$PROXY_REPEAT" "${proxy_rates[@]}"
if [ -n "$EXTRA_RATES" ] && clean proxy "${proxy_rates[-1]}" "$PROXY_REPEAT"; then
  read -ra extra <<<"$EXTRA_RATES"
  sweep proxy bootd-proxy "do" "$PROXY_REPEAT" "${extra[@]}"
  proxy_rates+=("${extra[@]}")
fi

# --- 2. proxy, broadcast path (Python client) -----------------------------------------
for rate in $RATES; do
  tries=0
  while :; do
    wait_quiet
    start_server bootd-proxy "bcast.$rate"
    s0=$(udp_counters "$SRV_NS")
    c0=$(udp_counters "$CLI_NS")
    r=$(in_cli taskset -c "$CLIENT_CPU" "$PY" "$OUT/bcast.py" "$CLI_IF" "$rate" "$DURATION" "$CLIENTS")
    s1=$(udp_counters "$SRV_NS")
    c1=$(udp_counters "$CLI_NS")
    stop_server
    ud=$(awk -v a="$s0" -v b="$s1" -v c="$c0" -v d="$c1" 'BEGIN { split(a, x); split(b, y); split(c, u); split(d, v)
    printf "srv in=%d rcvbuf_err=%d; cli in=%d rcvbuf_err=%d", y[1]-x[1], y[2]-x[2], v[1]-u[1], v[2]-u[2] }')
    row["bcast.$rate"]="$r|$ud"
    log "bcast rate=$rate: sent answered drops p50 p99 max(ms) achieved = $r; $ud"
    redo_check "broadcast run at $rate/s" && break
  done
done

# --- 3. full servers -------------------------------------------------------------------
if [ "$SKIP_FULL" != 1 ]; then
  read -ra full_rates <<<"$FULL_RATES"
  sweep full-do bootd-full "do" 1 "${full_rates[@]}"
  sweep dnsmasq-do dnsmasq "do" 1 "${full_rates[@]}"
  sweep full-dora bootd-full dora 1 "${full_rates[@]}"
  sweep dnsmasq-dora dnsmasq dora 1 "${full_rates[@]}"
fi

# --- tables ---------------------------------------------------------------------------------
{
  echo
  echo "1. bootd proxy-DHCP, DISCOVER->OFFER, perfdhcp (relay path: OFFER unicast to giaddr:67)"
  echo "   bootd on CPU $SERVER_CPU, perfdhcp on CPU $CLIENT_CPU; ${DURATION}s per run; delays in ms"
  echo "   unanswered = DISCOVERs sent - datagrams into the client namespace (kernel counters);"
  echo "   rcvbuf = DISCOVERs the kernel dropped at bootd's full socket buffer"
  fmt='%-6s | %-3s | %-6s | %-6s | %-5s | %-10s | %-6s | %-29s | %-25s | %s\n'
  # shellcheck disable=SC2059 # the format is ours
  printf "$fmt" rate run sent offers drops unanswered rcvbuf "perfdhcp min/avg/max/std" "wire p50/p90/p99/max *" "achieved/s"
  for rate in "${proxy_rates[@]}"; do
    for n in $(seq "$PROXY_REPEAT"); do
      v=${row[proxy.$rate.$n]}
      c=${row[proxy.$rate.$n.cap]}
      printf "$fmt" "$rate" "$n" "$(f "$v" 1 1)" "$(f "$v" 1 2)" "$(f "$v" 1 3)" "$(($(f "$v" 1 1) - $(f "$v" 4 3)))" "$(f "$v" 4 2)" \
        "$(f "$v" 1 5)/$(f "$v" 1 6)/$(f "$v" 1 7)/$(f "$v" 1 8)" \
        "$(f "$c" 1 2)/$(f "$c" 1 3)/$(f "$c" 1 4)/$(f "$c" 1 5)" "$(f "$v" 3 1)"
    done
  done
  echo "   * from a second run of the same rate under tcpdump on the client veth (DISCOVER to"
  echo "     OFFER on the wire); perfdhcp drops in those runs:"
  for rate in "${proxy_rates[@]}"; do
    printf '     %s/s:' "$rate"
    for n in $(seq "$PROXY_REPEAT"); do printf ' %s' "$(f "${row[proxy.$rate.$n.cap]}" 2 3)"; done
    echo
  done
  best=none
  for rate in "${proxy_rates[@]}"; do
    if clean proxy "$rate" "$PROXY_REPEAT"; then best=$rate; else break; fi
  done
  echo "   highest rate with every DISCOVER answered in all $PROXY_REPEAT runs (kernel counters): $best/s"
  echo
  echo "2. bootd proxy-DHCP, broadcast path (giaddr 0, OFFER to 255.255.255.255:68), Python client"
  printf '%-6s | %-8s | %-8s | %-6s | %-26s | %s\n' rate sent answered drops "client p50/p99/max (ms)" "achieved/s"
  for rate in $RATES; do
    v=${row[bcast.$rate]}
    printf '%-6s | %-8s | %-8s | %-6s | %-26s | %s\n' "$rate" "$(f "$v" 1 1)" "$(f "$v" 1 2)" "$(f "$v" 1 3)" "$(f "$v" 1 4)/$(f "$v" 1 5)/$(f "$v" 1 6)" "$(f "$v" 1 7)"
  done
  if [ "$SKIP_FULL" != 1 ]; then
    echo
    echo "3. full DHCP servers (perfdhcp, relay path): bootd dhcp.mode full vs dnsmasq --leasefile-ro --no-ping"
    echo "   rcvbuf = requests the kernel dropped at the server's full socket buffer"
    printf '%-13s | %-6s | %-6s | %-8s | %-6s | %-22s | %-8s | %-6s | %-22s | %-7s | %s\n' server rate sent offers drops "DO avg/max ms" acks "drops" "RA avg/max ms" rcvbuf "achieved/s"
    for tag in full-do dnsmasq-do full-dora dnsmasq-dora; do
      for rate in "${full_rates[@]}"; do
        v=${row[$tag.$rate.1]}
        if [[ $tag == *dora ]]; then ra="$(f "$v" 2 2)|$(f "$v" 2 3)|$(f "$v" 2 6)/$(f "$v" 2 7)"; else ra="-|-|-"; fi
        printf '%-13s | %-6s | %-6s | %-8s | %-6s | %-22s | %-8s | %-6s | %-22s | %-7s | %s\n' "$tag" "$rate" "$(f "$v" 1 1)" "$(f "$v" 1 2)" "$(f "$v" 1 3)" \
          "$(f "$v" 1 6)/$(f "$v" 1 7)" "$(echo "$ra" | cut -d'|' -f1)" "$(echo "$ra" | cut -d'|' -f2)" "$(echo "$ra" | cut -d'|' -f3)" "$(f "$v" 4 2)" "$(f "$v" 3 1)"
      done
    done
  fi
  echo
  echo "goal: >= 4000 answers/s with 0 drops, p99 < 10 ms (proxy)"
  echo "runs kept although the machine was busy right after them: $disturbed (each was retried $MAX_REDO times first)"
} | tee "$OUT/table.txt" | tee -a "$RAW"
