#!/usr/bin/env bash
# bench/nfs.sh — compare bootd's read-only NFSv3 export with nfs-ganesha 4.3
# (VFS FSAL) on the same tree, with the same client (libnfs-utils), in one run.
#
# Usage (as root, Debian 12):   bash bench/nfs.sh
#
# Environment knobs:
#   RUNS=7             timed walks per server (median reported)
#   READ_RUNS=21       timed runs of each read test per server (they are short)
#   SEQ_MIB=1024       size of the file the sequential read test reads
#   PIN=1              pin servers to SERVER_CPUS and clients to CLIENT_CPUS
#   SERVER_CPUS=0      CPU list for both servers (taskset -c)
#   CLIENT_CPUS=1      CPU list for all clients
#   CACHE=/var/cache/bootd-bench   where the reusable test data lives
#   SYNTH=/dev/shm/bootd-bench-synth  where the 200k-entry tree is generated
#   KEEP_SYNTH=0       keep the 200k-entry tree after the run (it lives in RAM)
#   BOOTD_BIN=         use this binary instead of building ./cmd/bootd
#   BOOTD_REF=         build bootd from this git revision instead of the work tree
#   BOOTD_LOG_LEVEL=info  bootd's --log-level (debug logs every connection)
#
# Everything runs inside a network namespace the script creates (bench-nfs):
# both servers listen on its loopback and every client runs in it, so the
# client side is identical for both servers and no traffic leaves the
# namespace. ganesha insists on registering with rpcbind, and rpcbind's unix
# socket (/run/rpcbind.sock) is a file shared by all network namespaces, so
# the rpcbind for ganesha also gets a private tmpfs on /run (its own mount
# namespace) that ganesha then joins. Nothing on the host's /run is touched.
#
# Output: the table on stdout; raw timings, logs and the table in bench/out/nfs/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=$HERE/out/nfs                 # gitignored (bench/out/)

RUNS=${RUNS:-7}
READ_RUNS=${READ_RUNS:-$((3 * RUNS))}
# The sequential read's file: big enough that starting nfs-cat and mounting
# (a few ms) do not weigh in it (a 64 MiB read took 20-40 ms in all).
SEQ_MIB=${SEQ_MIB:-1024}
PIN=${PIN:-1}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
CACHE=${CACHE:-/var/cache/bootd-bench}
SYNTH=${SYNTH:-/dev/shm/bootd-bench-synth}
KEEP_SYNTH=${KEEP_SYNTH:-0}

NS=bench-nfs
IMAGE=bench                       # bootd image name of the benchmark tree
STATE=$CACHE/state                # bootd state dir; the tree is generation 1
TREE=$STATE/images/$IMAGE/1/root  # the one tree both servers export
BOOTD_PORT=12049
GANESHA_NFS_PORT=2049
GANESHA_MNT_PORT=20048
SYNTH_PORT=12050                  # the second bootd, serving only the 200k image
SYNTH_TREE=$SYNTH/state/images/synth/1/root
NPAR=16                           # concurrent readers, one 16 MiB file each

# PIDs of everything this run started, stopped in reverse order by cleanup.
PIDS=()

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup --

stop_pid() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}"
	done
	ip netns del "$NS" 2>/dev/null || true
	if [[ $KEEP_SYNTH != 1 ]]; then
		rm -rf "$SYNTH"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A namespace left over from an interrupted run: stop what still runs in it
# (only this script puts processes there) and remove it.
reset_netns() {
	local pid
	if ip netns list | awk '{print $1}' | grep -qx "$NS"; then
		log "removing leftover namespace $NS"
		for pid in $(ip netns pids "$NS" 2>/dev/null); do
			stop_pid "$pid"
		done
		ip netns del "$NS"
	fi
	ip netns add "$NS"
	ip -n "$NS" link set lo up
}

# ------------------------------------------------------------ environment --

install_deps() {
	local need=() p
	for p in nfs-ganesha nfs-ganesha-vfs libnfs-utils mmdebstrap rpcbind; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
	done
	if ((${#need[@]})); then
		log "installing ${need[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
	fi
	# Debian's packages may start these as host services. They are left
	# alone and do not get in the way: the benchmark's own copies run in
	# their own network namespace with their own /run.
	for p in nfs-ganesha rpcbind.socket rpcbind; do
		if systemctl is-active --quiet "$p" 2>/dev/null; then
			log "note: host service $p is active; it is not used (the benchmark runs its own in $NS)"
		fi
	done
	command -v go >/dev/null || [[ -n ${BOOTD_BIN:-} ]] || die "go not found (or set BOOTD_BIN)"
}

# Test data, built once and reused: a Debian minbase root, a 64 MiB file and
# 16 files of 16 MiB, all random so no layer can compress or dedupe them.
# Each piece is built beside its final name and renamed, so an interrupted
# run never leaves a half-made piece that a later run would trust.
prepare_data() {
	mkdir -p "$TREE/par"
	if [[ ! -d $TREE/debian ]]; then
		log "building Debian bookworm minbase with mmdebstrap (once; cached in $CACHE)"
		rm -rf "$TREE/debian.tmp"
		mmdebstrap --quiet --variant=minbase bookworm "$TREE/debian.tmp" ${MIRROR:+"$MIRROR"} >&2 ||
			die "mmdebstrap failed (set MIRROR=URL to use another mirror)"
		mv "$TREE/debian.tmp" "$TREE/debian"
	fi
	if [[ ! -f $TREE/file64 ]]; then
		log "writing 64 MiB random file"
		head -c $((64 << 20)) /dev/urandom >"$TREE/file64.tmp"
		mv "$TREE/file64.tmp" "$TREE/file64"
	fi
	if [[ ! -f $TREE/seq$SEQ_MIB ]]; then
		log "writing $SEQ_MIB MiB random file (the sequential read)"
		head -c $((SEQ_MIB << 20)) /dev/urandom >"$TREE/seq$SEQ_MIB.tmp"
		mv "$TREE/seq$SEQ_MIB.tmp" "$TREE/seq$SEQ_MIB"
	fi
	local i f
	for ((i = 0; i < NPAR; i++)); do
		f=$(printf '%s/par/r%02d' "$TREE" "$i")
		if [[ ! -f $f ]]; then
			head -c $((16 << 20)) /dev/urandom >"$f.tmp"
			mv "$f.tmp" "$f"
		fi
	done
	ln -sfn 1 "$STATE/images/$IMAGE/current"
	# What the correctness checks compare the servers' answers with.
	DEBIAN_ENTRIES=$(find "$TREE/debian" -mindepth 1 | wc -l)
	FILE64_SHA=$(sha256sum <"$TREE/file64" | cut -d' ' -f1)
	log "tree: $TREE ($DEBIAN_ENTRIES entries under debian/)"
}

# The 200k-entry synthetic image for the memory test: 2000 directories of 100
# one-byte files, in RAM so that generating it takes seconds. It is a state
# dir of its own so that the bootd measured holds that image only.
prepare_synth() {
	local root=$SYNTH_TREE d
	if [[ ! -f $SYNTH/.complete ]]; then
		log "generating 200k-entry tree in $SYNTH"
		rm -rf "$SYNTH"
		mkdir -p "$root"
		for ((d = 0; d < 2000; d++)); do
			mkdir "$root/d$d"
			# one tee writes all 100 files of a directory: no process per file
			printf x | tee "$root/d$d/f"{00..99} >/dev/null
		done
		ln -sfn 1 "$SYNTH/state/images/synth/current"
		touch "$SYNTH/.complete"
	fi
	SYNTH_ENTRIES=$(find "$root" -mindepth 1 | wc -l)
}

# ---------------------------------------------------------------- servers --

# The taskset prefixes for servers and for clients (empty when PIN=0).
# ip netns exec, taskset, unshare and nsenter all exec the next program, so
# $! after starting a server through them is the server's own PID.
SERVER_PIN=()
CLIENT_PIN=()
if [[ $PIN == 1 ]]; then
	SERVER_PIN=(taskset -c "$SERVER_CPUS")
	CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
fi

# The binary under test: BOOTD_BIN as given, or built from BOOTD_REF (a git
# revision, exported to a scratch directory: the work tree is not touched),
# or by default from the work tree as it is now.
build_bootd() {
	local src=$REPO
	if [[ -n ${BOOTD_BIN:-} ]]; then
		BIN=$BOOTD_BIN
		BOOTD_VERSION="$BIN"
		return
	fi
	BIN=$OUT/bootd
	if [[ -n ${BOOTD_REF:-} ]]; then
		src=$OUT/src
		rm -rf "$src"
		mkdir -p "$src"
		git -C "$REPO" archive "$BOOTD_REF" | tar -x -C "$src"
		BOOTD_VERSION="$(git -C "$REPO" rev-parse --short "$BOOTD_REF")"
	else
		BOOTD_VERSION="$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown) (work tree)"
	fi
	log "building bootd $BOOTD_VERSION"
	(cd "$src" && go build -o "$BIN" ./cmd/bootd) || die "go build failed in $src"
}

# start_bootd NAME STATE_DIR PORT: starts bootd, waits until it has indexed
# the current generation (Preload) so no timed run pays for indexing, and
# leaves its PID in STARTED_PID (not printed: a server started inside $(...)
# would be lost to cleanup and hold the substitution's pipe open).
start_bootd() {
	local name=$1 state=$2 port=$3 conf=$OUT/$1.yaml logf=$OUT/$1.log pid i
	cat >"$conf" <<-EOF
		state_dir: $state
		nfs:
		  listen: "127.0.0.1:$port"
		  allow: ["127.0.0.1/32"]
		  secure_ports: false
		  # every client is 127.0.0.1: the 16 concurrent readers need more than the default 8
		  max_connections_per_client: 64
	EOF
	# Versions with DHCP and TFTP start them by default (and then want a
	# cluster interface); older ones reject the keys. Their own error
	# strings say which kind this binary is.
	if grep -aq 'dhcp.mode' "$BIN"; then
		printf 'dhcp:\n  mode: "off"\ntftp:\n  listen: ""\n' >>"$conf"
	fi
	# Likewise the HTTP server, syslog and netconsole receivers: two bootds
	# in one namespace (the memory test's) would want the same ports.
	if grep -aq 'http.listen' "$BIN"; then
		printf 'http:\n  listen: ""\nsyslog:\n  listen: ""\nconsole:\n  listen: ""\n' >>"$conf"
	fi
	: >"$logf"
	ip netns exec "$NS" "${SERVER_PIN[@]}" "$BIN" serve --config "$conf" --log-level "${BOOTD_LOG_LEVEL:-info}" 2>"$logf" &
	pid=$!
	PIDS+=("$pid")
	STARTED_PID=$pid
	for i in $(seq 600); do
		grep -q 'indexed generation' "$logf" && break
		kill -0 "$pid" 2>/dev/null || die "bootd ($name) exited; see $logf"
		sleep 0.1
	done
	grep -q 'indexed generation' "$logf" || die "bootd ($name) did not index within 60 s; see $logf"
}

start_ganesha() {
	local conf=$OUT/ganesha.conf i
	# Defaults everywhere except what makes it NFSv3-only over TCP on fixed
	# ports: a like-for-like with bootd's single-purpose export.
	cat >"$conf" <<-EOF
		NFS_CORE_PARAM {
		  Protocols = 3;
		  NFS_Protocols = 3;
		  NFS_Port = $GANESHA_NFS_PORT;
		  MNT_Port = $GANESHA_MNT_PORT;
		  Enable_NLM = false;
		  Enable_RQUOTA = false;
		}
		NFSV4 { Graceless = true; }
		EXPORT {
		  Export_Id = 1;
		  Path = $TREE;
		  Pseudo = $TREE;
		  Access_Type = RO;
		  Squash = No_Root_Squash;
		  Protocols = 3;
		  Transports = TCP;
		  SecType = sys;
		  FSAL { Name = VFS; }
		}
		EXPORT {
		  Export_Id = 2;
		  Path = $SYNTH_TREE;
		  Pseudo = $SYNTH_TREE;
		  Access_Type = RO;
		  Squash = No_Root_Squash;
		  Protocols = 3;
		  Transports = TCP;
		  SecType = sys;
		  FSAL { Name = VFS; }
		}
		LOG { Default_Log_Level = EVENT; }
	EOF
	: >"$OUT/rpcbind.log"
	ip netns exec "$NS" unshare --mount --propagation private -- sh -c '
		mount -t tmpfs -o mode=755 bench-run /run || exit 1
		mkdir -p /run/rpcbind && chown _rpc /run/rpcbind 2>/dev/null
		exec "$@"' _ "${SERVER_PIN[@]}" rpcbind -f -w >"$OUT/rpcbind.log" 2>&1 &
	RPCBIND_PID=$!
	PIDS+=("$RPCBIND_PID")
	for i in $(seq 50); do
		[[ -S /proc/$RPCBIND_PID/root/run/rpcbind.sock ]] && break
		sleep 0.1
	done
	[[ -S /proc/$RPCBIND_PID/root/run/rpcbind.sock ]] || die "rpcbind did not start; see $OUT/rpcbind.log"

	: >"$OUT/ganesha.log"
	nsenter --mount="/proc/$RPCBIND_PID/ns/mnt" --net="/run/netns/$NS" \
		"${SERVER_PIN[@]}" ganesha.nfsd -F -f "$conf" -L "$OUT/ganesha.log" -p "$OUT/ganesha.pid" &
	GANESHA_PID=$!
	PIDS+=("$GANESHA_PID")
	for i in $(seq 300); do
		grep -q 'NFS SERVER INITIALIZED' "$OUT/ganesha.log" && break
		kill -0 "$GANESHA_PID" 2>/dev/null || die "ganesha exited; see $OUT/ganesha.log"
		sleep 0.1
	done
	grep -q 'NFS SERVER INITIALIZED' "$OUT/ganesha.log" || die "ganesha did not start; see $OUT/ganesha.log"
}

# ---------------------------------------------------------------- clients --

# url SRV TREE REL: the URL of path REL in TREE (main or synth) on SRV.
# libnfs mounts the dirname of a file's path (nfs-cat) or the whole path
# (nfs-ls), so both servers see the same kind of MOUNT: the export root or a
# subdirectory of it.
url() {
	local srv=$1 tree=$2 rel=$3 path port mport
	case $srv-$tree in
	bootd-main) path=/$IMAGE/1 port=$BOOTD_PORT mport=$BOOTD_PORT ;;
	bootd-synth) path=/synth/1 port=$SYNTH_PORT mport=$SYNTH_PORT ;;
	ganesha-main) path=$TREE port=$GANESHA_NFS_PORT mport=$GANESHA_MNT_PORT ;;
	ganesha-synth) path=$SYNTH_TREE port=$GANESHA_NFS_PORT mport=$GANESHA_MNT_PORT ;;
	esac
	echo "nfs://127.0.0.1$path${rel:+/$rel}?version=3&nfsport=$port&mountport=$mport"
}

# The server process and log behind SRV for TREE.
srv_pid() { echo "${SRV_PID[$1-$2]}"; }
srv_log() {
	case $1-$2 in
	bootd-main) echo "$OUT/bootd.log" ;;
	bootd-synth) echo "$OUT/bootd-synth.log" ;;
	ganesha-*) echo "$OUT/ganesha.log" ;;
	esac
}

# client_failed SRV TREE WHAT: a client run failed. Show the server's last
# log lines, since the client says little more than "nfs_service failed".
client_failed() {
	log "$1 ($2 tree): $3 failed; last lines of $(srv_log "$1" "$2"):"
	tail -n 15 "$(srv_log "$1" "$2")" >&2 || true
	die "$1: $3 failed"
}

# in_ns: run a command as a client, inside the namespace, pinned.
in_ns() { ip netns exec "$NS" "${CLIENT_PIN[@]}" "$@"; }

# timed OUTFILE CMD...: runs CMD in the namespace with stdout to OUTFILE and
# prints the elapsed seconds. The clock is read inside the namespace, so the
# cost of entering it (ip netns exec) is not part of the time.
timed() {
	local outf=$1
	shift
	# shellcheck disable=SC2016 # expanded by the inner bash
	in_ns bash -c '
		o=$1; shift
		s=$EPOCHREALTIME
		"$@" >"$o" || exit 1
		e=$EPOCHREALTIME
		echo "$s $e" | awk "{printf \"%.6f\n\", \$2-\$1}"' _ "$outf" "$@"
}

# timed_parallel URL...: one nfs-cat per URL, all at once; prints the seconds
# from the first start to the last exit. Fails if any reader failed.
timed_parallel() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	in_ns bash -c '
		s=$EPOCHREALTIME
		pids=()
		for u in "$@"; do nfs-cat "$u" >/dev/null & pids+=($!); done
		rc=0
		for p in "${pids[@]}"; do wait "$p" || rc=1; done
		e=$EPOCHREALTIME
		[ $rc = 0 ] || exit 1
		echo "$s $e" | awk "{printf \"%.6f\n\", \$2-\$1}"' _ "$@"
}

# Before timing anything: both servers return the same bytes and the same
# number of entries as the local tree. A fast wrong answer is no result.
verify_main() {
	local srv=$1 sum n
	sum=$(in_ns nfs-cat "$(url "$srv" main file64)" | sha256sum | cut -d' ' -f1) ||
		client_failed "$srv" main "nfs-cat $(url "$srv" main file64)"
	[[ $sum == "$FILE64_SHA" ]] || die "$srv: file64 read back wrong (sha256 $sum)"
	n=$(in_ns nfs-ls -R "$(url "$srv" main debian)" | wc -l) ||
		client_failed "$srv" main "nfs-ls -R $(url "$srv" main debian)"
	[[ $n == "$DEBIAN_ENTRIES" ]] || die "$srv: nfs-ls -R listed $n entries, the tree has $DEBIAN_ENTRIES"
	log "$srv verified: file64 sha256 matches, walk lists $n entries"
}

# CPU time (user+system, in clock ticks) a server has used so far: the raw
# results carry each run's server CPU seconds next to its wall time, since a
# server that is as fast but burns twice the CPU is not as good.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One run of a test appends a line to RAW:
#   test server run value unit wall_seconds server_cpu_seconds
# record TEST SRV TREE RUN VALUE UNIT SECONDS TICKS_BEFORE
record() {
	local after
	after=$(cpu_ticks "$(srv_pid "$2" "$3")")
	echo "$1 $2 $4 $5 $6 $7 $(awk -v d="$((after - $8))" -v c="$CLK_TCK" 'BEGIN{printf "%.2f", d/c}')" >>"$RAW"
}

run_seq() { # SEQ_MIB sequential read by one client
	local srv=$1 run=$2 t c0
	c0=$(cpu_ticks "$(srv_pid "$srv" main)")
	t=$(timed /dev/null nfs-cat "$(url "$srv" main "seq$SEQ_MIB")") ||
		client_failed "$srv" main "nfs-cat seq$SEQ_MIB (run $run)"
	record seq_read "$srv" main "$run" "$(awk -v t="$t" -v m="$SEQ_MIB" 'BEGIN{printf "%.2f", m/t}')" MiB/s "$t" "$c0"
}

# walk_tree TEST SRV TREE REL WANT RUN: one nfs-ls -R, checked for count.
walk_tree() {
	local test=$1 srv=$2 tree=$3 rel=$4 want=$5 run=$6 t n c0 lst=$OUT/$1.$2.lst
	c0=$(cpu_ticks "$(srv_pid "$srv" "$tree")")
	t=$(timed "$lst" nfs-ls -R "$(url "$srv" "$tree" "$rel")") ||
		client_failed "$srv" "$tree" "nfs-ls -R (run $run)"
	n=$(wc -l <"$lst")
	[[ $n == "$want" ]] || die "$srv: $test run $run listed $n entries, want $want"
	record "$test" "$srv" "$tree" "$run" "$(awk -v n="$n" -v t="$t" 'BEGIN{printf "%.0f", n/t}')" entries/s "$t" "$c0"
}

run_walk() { walk_tree walk "$1" main debian "$DEBIAN_ENTRIES" "$2"; }
run_walk_synth() { walk_tree walk_synth "$1" synth "" "$SYNTH_ENTRIES" "$2"; }

run_par() { # NPAR clients at once, each reading its own 16 MiB file
	local srv=$1 run=$2 t i c0 urls=()
	for ((i = 0; i < NPAR; i++)); do urls+=("$(url "$srv" main "$(printf 'par/r%02d' "$i")")"); done
	c0=$(cpu_ticks "$(srv_pid "$srv" main)")
	t=$(timed_parallel "${urls[@]}") || client_failed "$srv" main "a concurrent reader (run $run)"
	record par_read "$srv" main "$run" "$(awk -v n="$NPAR" -v t="$t" 'BEGIN{printf "%.2f", n*16/t}')" MiB/s "$t" "$c0"
}

# run_test TEST [N]: a warm-up (run 0, not in the medians: it fills the page
# cache, ganesha's metadata cache and both open-file caches), then N runs
# (default RUNS), each run one server after the other, so that slow drift in
# the machine's speed (other load) hits both servers alike.
run_test() {
	local run srv n=${2:-$RUNS}
	log "test $1: warm-up + $n runs per server"
	for run in $(seq 0 "$n"); do
		for srv in bootd ganesha; do
			"run_$1" "$srv" "$run"
		done
	done
}

# runstat FN TEST SRV [COL]: median ("median") or "lo-hi" range ("spread") of
# column COL (4: the rate, 7: server CPU seconds) over the timed runs.
runstat() {
	awk -v t="$2" -v s="$3" -v c="${4:-4}" '$1==t && $2==s && $3>=1 {print $c}' "$RAW" | sort -g |
		if [[ $1 == median ]]; then
			awk '{v[NR]=$1} END{if (NR==0) {print "nan"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'
		else
			awk 'NR==1{lo=$1} {hi=$1} END{print lo "-" hi}'
		fi
}

# ------------------------------------------------------------ memory test --

status_kib() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }

# The 200k-entry image on a bootd of its own (so its VmHWM is that image's
# cost alone), walked by the same client; ganesha serves the same tree as its
# second export, for the walk comparison. bootd's VmRSS right after indexing
# and its VmHWM/VmRSS after all the walks are the memory result.
memory_test() {
	local pid
	log "memory test: bootd serving the ${SYNTH_ENTRIES}-entry synthetic image"
	start_bootd bootd-synth "$SYNTH/state" "$SYNTH_PORT"
	pid=$STARTED_PID
	SRV_PID[bootd-synth]=$pid
	SYNTH_IDLE=$(status_kib "$pid" VmRSS)
	SYNTH_INDEX=$(grep -o 'took=[^ ]*' "$OUT/bootd-synth.log" | head -1 | cut -d= -f2)
	run_test walk_synth
	SYNTH_HWM=$(status_kib "$pid" VmHWM)
	SYNTH_RSS=$(status_kib "$pid" VmRSS)
	{
		echo "synthetic_entries $SYNTH_ENTRIES"
		echo "index_took $SYNTH_INDEX"
		echo "bootd_rss_after_index_kib $SYNTH_IDLE"
		echo "bootd_VmHWM_kib $SYNTH_HWM"
		echo "bootd_VmRSS_kib $SYNTH_RSS"
		echo "ganesha_VmHWM_kib $(status_kib "$GANESHA_PID" VmHWM) (whole run, both exports)"
	} >"$OUT/memory.txt"
}

# ------------------------------------------------------------------- main --

main() {
	[[ $EUID == 0 ]] || die "run as root (network namespaces, mmdebstrap)"
	mkdir -p "$OUT" "$CACHE"
	RAW=$OUT/raw.txt
	: >"$RAW"
	CLK_TCK=$(getconf CLK_TCK)
	declare -gA SRV_PID
	local t0=$SECONDS
	LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
	# Other work on the machine shows up as noise in every number here.
	if awk -v l="$LOAD_START" 'BEGIN{exit !(l > 0.5)}'; then
		log "warning: load average is $LOAD_START before starting; expect noisy results"
	fi
	install_deps
	prepare_data
	prepare_synth # before ganesha starts: it is ganesha's second export
	build_bootd
	reset_netns

	start_bootd bootd "$STATE" "$BOOTD_PORT"
	BOOTD_PID=$STARTED_PID
	start_ganesha
	SRV_PID=([bootd-main]=$BOOTD_PID [ganesha-main]=$GANESHA_PID [ganesha-synth]=$GANESHA_PID)
	verify_main bootd
	verify_main ganesha

	run_test seq "$READ_RUNS"
	run_test walk
	run_test par "$READ_RUNS"
	BOOTD_MAIN_HWM=$(status_kib "$BOOTD_PID" VmHWM)

	memory_test
	report "$((SECONDS - t0))" | tee "$OUT/table.txt"
}

# paired TEST [COL]: median over runs of bootd/ganesha within each run
# number. The two servers' runs of one number ran back to back, so this
# cancels most drift in the machine's speed that the plain medians keep.
paired() {
	awk -v t="$1" -v c="${2:-4}" '$1==t && $3>=1 {v[$2 " " $3]=$c} END{for (k in v) {split(k, a, " ");
		if (a[1]=="bootd" && v["ganesha " a[2]] > 0) print v[k]/v["ganesha " a[2]]}}' "$RAW" | sort -g |
		awk '{v[NR]=$1} END{if (NR==0) {print "nan"; exit} if (NR%2) printf "%.2f\n", v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'
}

# row TEST LABEL UNIT GOAL: one line of the table.
row() {
	local b g
	b=$(runstat median "$1" bootd)
	g=$(runstat median "$1" ganesha)
	printf '%-30s | %-30s | %-30s | %5s | %6s | %s\n' "$2" \
		"$b [$(runstat spread "$1" bootd)] $3" "$g [$(runstat spread "$1" ganesha)] $3" \
		"$(awk -v b="$b" -v g="$g" 'BEGIN{printf "%.2f", b/g}')" "$(paired "$1")" "$4"
}

# cpurow TEST LABEL: median server CPU seconds per run.
cpurow() {
	local b g
	b=$(runstat median "$1" bootd 7)
	g=$(runstat median "$1" ganesha 7)
	printf '%-30s | %-30s | %-30s | %5s | %6s\n' "$2" "$b s" "$g s" \
		"$(awk -v b="$b" -v g="$g" 'BEGIN{if (g > 0) printf "%.2f", b/g; else print "-"}')" "$(paired "$1" 7)"
}

report() {
	local elapsed=$1 warn
	echo
	echo "bootd $BOOTD_VERSION vs nfs-ganesha $(dpkg-query -W -f='${Version}' nfs-ganesha) (VFS FSAL, defaults)," \
		"client libnfs-utils $(dpkg-query -W -f='${Version}' libnfs-utils), NFSv3 over TCP on loopback in netns $NS"
	echo "$(nproc) CPUs, 1-min load average $LOAD_START at start, $(cut -d' ' -f1 /proc/loadavg) at end;" \
		"median of $READ_RUNS runs (reads) or $RUNS runs (walks) after one warm-up, [min-max]; warm page cache"
	echo "ratio = bootd median / ganesha median; paired = median of per-run bootd/ganesha (runs alternate servers)"
	if [[ $PIN == 1 ]]; then
		echo "pinned with taskset: both servers on CPU $SERVER_CPUS, all clients on CPU $CLIENT_CPUS" \
			"(so bootd runs with GOMAXPROCS=$(taskset -c "$SERVER_CPUS" nproc))"
	else
		echo "not pinned"
	fi
	echo
	printf '%-30s | %-30s | %-30s | %5s | %6s | %s\n' test bootd ganesha ratio paired goal
	printf '%s\n' "-------------------------------+--------------------------------+--------------------------------+-------+--------+------"
	row seq_read "$SEQ_MIB MiB sequential read" MiB/s ">=1.2"
	row walk "walk Debian root ($DEBIAN_ENTRIES)" entries/s ">=1.5"
	row par_read "$NPAR concurrent readers x16 MiB" MiB/s ">=1.2"
	row walk_synth "walk synthetic ($SYNTH_ENTRIES)" entries/s "-"
	echo
	echo "server CPU seconds per run (median; lower is better):"
	cpurow seq_read "$SEQ_MIB MiB sequential read"
	cpurow walk "walk Debian root"
	cpurow par_read "$NPAR concurrent readers"
	cpurow walk_synth "walk synthetic"
	echo
	echo "bootd memory with the ${SYNTH_ENTRIES}-entry image (goal: VmHWM <= 100 MiB):"
	echo "  indexed in $SYNTH_INDEX; VmRSS after indexing $((SYNTH_IDLE / 1024)) MiB;" \
		"after $((RUNS + 1)) full nfs-ls -R walks: VmHWM $((SYNTH_HWM / 1024)) MiB, VmRSS $((SYNTH_RSS / 1024)) MiB"
	echo "  for reference: bootd VmHWM with the Debian image $((BOOTD_MAIN_HWM / 1024)) MiB;" \
		"ganesha VmHWM over the whole run $(($(status_kib "$GANESHA_PID" VmHWM) / 1024)) MiB"
	echo
	warn=$(cat "$OUT/bootd.log" "$OUT/bootd-synth.log" | grep -cE 'level=(WARN|ERROR)' || true)
	echo "bootd log lines at WARN or ERROR: $warn (bench/out/nfs/bootd.log, bench/out/nfs/bootd-synth.log)"
	echo "raw results: bench/out/nfs/raw.txt (test server run value unit wall_s server_cpu_s), bench/out/nfs/memory.txt"
	echo "total time ${elapsed}s"
}

main "$@"
