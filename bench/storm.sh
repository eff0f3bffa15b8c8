#!/usr/bin/env bash
# bench/storm.sh — a boot storm: N simulated nodes powered on at once
# (bench/storm), against bootd and against the hand-wired stack, one after
# the other in one run, on the same image:
#   bootd  `bootd serve` (proxy-DHCP, TFTP, HTTP, NFS) on the image bench/boot.sh
#          prepares (Debian 12 by default);
#   peer   dnsmasq (proxy-DHCP + its TFTP, --tftp-max raised to N) and
#          nfs-ganesha (VFS, with rpcbind) exporting the same tree, and
#          pxelinux booting Debian's initramfs-tools NFS-root initrd.
# The nodes' ROMs are iPXE, as QEMU's are (FIRMWARE=ipxe): bootd gives them
# its HTTP path, dnsmasq gives them pxelinux over TFTP. FIRMWARE=uefi is
# plain UEFI PXE: the 4011 exchange and TFTP for both.
# Each node replays, after its MOUNT, the NFS calls a real node made during
# its boot (bench/storm/testdata/boot-nfs.jsonl.gz, recorded with
# nfs.record from a lab boot of the same image), at its recorded pace
# divided by COMPRESS.
#
# Usage (as root, Debian 12 host):   bash bench/storm.sh [N ...]   (default 50)
# Prints a table per server and N, and for each N a last line:
#   storm N=1000 bootd=41.2s lost=0 peer=97.5s peer_lost=3 rss=180MiB
#
# Environment knobs:
#   OUT=/var/tmp/storm     reports (N-bootd.json, N-peer.json), logs, lines.txt
#   BOOTOUT=/var/tmp/bootrace   bench/boot.sh's OUT: its image and peer files
#                          (made with PREPARE_ONLY=1 if missing)
#   FIRMWARE=ipxe          ipxe, bios or uefi
#   COMPRESS=1             divide the recording's pace by this
#   SYSTEMS=bootd,peer
#   TIMEOUT=15m            a storm ends after this; unfinished nodes are lost
#
# Everything runs inside the namespaces storm-srv and storm-cli (10.215.0.0/16),
# removed at the end; every process started is stopped by PID.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

OUT=${OUT:-/var/tmp/storm}
BOOTOUT=${BOOTOUT:-/var/tmp/bootrace}
FIRMWARE=${FIRMWARE:-ipxe}
COMPRESS=${COMPRESS:-1}
SYSTEMS=${SYSTEMS:-bootd,peer}
TIMEOUT=${TIMEOUT:-15m}
RECORDING=$REPO/bench/storm/testdata/boot-nfs.jsonl.gz
SERVER=10.215.0.1
NS=storm-srv

NS_LIST=("$@")
((${#NS_LIST[@]})) || NS_LIST=(50)

PIDS=()


stop_all() {
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}" 10
	done
	PIDS=()
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_all
	[[ -x $OUT/bin/storm ]] && "$OUT/bin/storm" net down || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) == 0 ]] || die "run as root (namespaces)"

# ------------------------------------------------------------ preparation --

mkdir -p "$OUT/bin" "$OUT/logs"
if [[ ! -f $BOOTOUT/prepared.env ]]; then
	log "preparing the image and the peer's files (bench/boot.sh, PREPARE_ONLY=1, OUT=$BOOTOUT)"
	PREPARE_ONLY=1 REUSE_IMAGE=1 OUT=$BOOTOUT bash "$REPO/bench/boot.sh"
fi
# shellcheck source=/dev/null
. "$BOOTOUT/prepared.env"
[[ -d $TREE/etc ]] || die "no image tree at $TREE (delete $BOOTOUT/prepared.env to prepare again)"
STATE=$(cd "$GEN/../../.." && pwd) # the bootd lab's state_dir
IMAGE=$(basename "$(dirname "$GEN")")
log "image $IMAGE generation $(basename "$GEN"), state $STATE"

log "building bootd and storm"
(cd "$REPO" && CGO_ENABLED=0 go build -ldflags='-s -w' -o "$OUT/bin/bootd" ./cmd/bootd) || die "building bootd"
(cd "$REPO" && CGO_ENABLED=0 go build -o "$OUT/bin/storm" ./bench/storm) || die "building bench/storm"
STORM=$OUT/bin/storm

# The peer's TFTP tree: bench/boot.sh's loaders, kernel and initrd, with a
# configuration that mounts the tree from this server.
T=$OUT/tftp
rm -rf "$T"
cp -al "$WORK/tftp" "$T" 2>/dev/null || cp -a "$WORK/tftp" "$T"
for d in bios efi64; do
	rm -f "$T/$d/pxelinux.cfg/default"
	sed "s|nfsroot=[^ ,]*|nfsroot=$SERVER:$TREE|" "$WORK/tftp/$d/pxelinux.cfg/default" >"$T/$d/pxelinux.cfg/default"
done
chmod -R a+rX "$T"

# ------------------------------------------------------------------ runs --

wait_http() {
	local i
	for ((i = 0; i < 150; i++)); do
		ip netns exec storm-cli curl -sf -o /dev/null "$1" && return 0
		sleep 0.2
	done
	return 1
}

storm_run() { # NAME N PIDS...
	local name=$1 n=$2
	shift 2
	local pids
	pids=$(
		IFS=,
		echo "$*"
	)
	ip netns exec storm-cli "$STORM" run -name "$name" -n "$n" -firmware "$FIRMWARE" -replay "$RECORDING" \
		-compress "$COMPRESS" -timeout "$TIMEOUT" -pids "$pids" -mount-port 20048 -nfs-port 2049 \
		-out "$OUT/$n-$name.json" | tee -a "$OUT/tables.txt"
}

run_bootd() {
	local n=$1 cfg=$OUT/bootd.yaml
	cat >"$cfg" <<-EOF
		state_dir: $STATE
		interface: sv0
		dhcp: {mode: proxy, ipv6_ra: true}
		tftp: {listen: "0.0.0.0:69"}
		nfs: {listen: "$SERVER:2049", allow: ["10.215.0.0/16"]}
		http: {listen: "$SERVER:8080", boot: chain}
		syslog: {listen: ""}
		console: {listen: ""}
		defaults: {image: $IMAGE, console: "ttyS0,115200n8", append: "quiet"}
		unknown_nodes: boot
	EOF
	ip netns exec $NS "$OUT/bin/bootd" serve --config "$cfg" >"$OUT/logs/$n-bootd.log" 2>&1 &
	PIDS+=($!)
	local pid=$!
	wait_http "http://$SERVER:8080/api/v1/nodes" || die "bootd did not start: $OUT/logs/$n-bootd.log"
	sleep 2 # NFS indexes the generation
	storm_run bootd "$n" "$pid"
	stop_all
}

run_peer() {
	local n=$1 run=$OUT/peer-run
	rm -rf "$run"
	mkdir -p "$run"
	# rpcbind's socket file is shared across namespaces: its own /run.
	ip netns exec $NS unshare --mount --propagation private -- sh -c '
		mount -t tmpfs -o mode=755 storm-run /run || exit 1
		mkdir -p /run/rpcbind && chown _rpc /run/rpcbind 2>/dev/null
		exec rpcbind -f -w' >"$OUT/logs/$n-rpcbind.log" 2>&1 &
	PIDS+=($!)
	local rpc=$! i
	for ((i = 0; i < 100; i++)); do
		[[ -S /proc/$rpc/root/run/rpcbind.sock ]] && break
		sleep 0.1
	done
	cat >"$run/ganesha.conf" <<-EOF
		NFS_CORE_PARAM {
		  Protocols = 3;
		  NFS_Protocols = 3;
		  NFS_Port = 2049;
		  MNT_Port = 20048;
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
		LOG { Default_Log_Level = EVENT; }
	EOF
	ip netns exec $NS nsenter --mount=/proc/$rpc/ns/mnt ganesha.nfsd -F -f "$run/ganesha.conf" \
		-L "$OUT/logs/$n-ganesha.nfsd.log" -p "$run/ganesha.pid" >"$OUT/logs/$n-ganesha.log" 2>&1 &
	PIDS+=($!)
	local g=$!
	for ((i = 0; i < 600; i++)); do
		grep -q "NFS SERVER INITIALIZED" "$OUT/logs/$n-ganesha.nfsd.log" 2>/dev/null && break
		kill -0 "$g" 2>/dev/null || die "ganesha died: $OUT/logs/$n-ganesha.nfsd.log"
		sleep 0.1
	done
	# --tftp-max: dnsmasq serves 50 transfers at once by default; an admin
	# expecting a storm raises it.
	ip netns exec $NS dnsmasq --no-daemon --port=0 --conf-file=/dev/null --interface=sv0 --bind-interfaces \
		--no-resolv --no-hosts --dhcp-range=10.215.0.0,proxy,255.255.0.0 \
		"--pxe-service=x86PC,storm peer BIOS,bios/pxelinux" \
		"--pxe-service=BC_EFI,storm peer UEFI,efi64/syslinux.efi" \
		"--pxe-service=X86-64_EFI,storm peer UEFI,efi64/syslinux.efi" \
		--enable-tftp --tftp-root="$T" --tftp-max="$((n + 64))" >"$OUT/logs/$n-dnsmasq.log" 2>&1 &
	PIDS+=($!)
	local d=$!
	sleep 1
	storm_run peer "$n" "$d" "$g" "$rpc"
	stop_all
}

: >"$OUT/lines.txt"
: >"$OUT/tables.txt"
for n in "${NS_LIST[@]}"; do
	log "storm of $n nodes: namespaces"
	"$STORM" net up -n "$n"
	for s in ${SYSTEMS//,/ }; do
		log "storm of $n nodes against $s"
		"run_$s" "$n"
	done
	"$STORM" net down
	if [[ -f $OUT/$n-bootd.json && -f $OUT/$n-peer.json ]]; then
		"$STORM" line "$OUT/$n-bootd.json" "$OUT/$n-peer.json" | tee -a "$OUT/lines.txt"
	fi
done
log "reports in $OUT: tables.txt, lines.txt, N-*.json, logs/"
cat "$OUT/lines.txt"
