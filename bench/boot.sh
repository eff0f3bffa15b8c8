#!/usr/bin/env bash
# bench/boot.sh — power-on to the serial "login:" prompt of one QEMU node,
# side by side in one run, for:
#   bootd  the node PXE-boots from `bootd serve` in proxy mode beside the site's
#          dnsmasq: what `bootd lab up --nodes 1 --firmware bios|uefi` does
#          (bootd's default path, iPXE -> HTTP), in the lab's namespaces;
#   peer   the hand-wired stack on the same image tree: dnsmasq as proxy-DHCP
#          with its own TFTP (pxelinux.0 / syslinux.efi), Debian's kernel with
#          an initramfs-tools NFS-root initrd (mkinitramfs, BOOT=nfs, in an
#          overlay of the image), the tree exported read-only over NFSv3 by
#          nfs-ganesha (VFS) with rpcbind, site DHCP by another dnsmasq; all in
#          namespaces this script makes, on 10.214.0.0/24;
#   limit  no network boot: the same tree on an ext4 virtio disk
#          (mkfs.ext4 -d), QEMU -kernel/-initrd with Debian's initramfs.
# bootd and peer for BIOS (SeaBIOS, e1000) and UEFI (OVMF, virtio-net); the
# limit with the same firmware and NIC, from -kernel. The QEMU node is the
# lab's (lab.StartNode: TCG, 1 vCPU, 1 GiB, serial logged to a file).
# Boots run one at a time: per round and firmware, bootd, peer, limit.
#
# Usage (as root, Debian 12 host):   bash bench/boot.sh
#
# Environment knobs:
#   ROUNDS=2            rounds (the table shows medians)
#   OUT=/var/tmp/bootrace   output: table.txt, raw.tsv, raw.jsonl, consoles/,
#                       logs/; also the bootd lab dir and the peer's files
#   FIRMWARES=bios,uefi
#   SYSTEMS=bootd,bootd-tftp,peer,limit   (order within a round; bootd is its
#                       HTTP path, bootd-tftp the same with http.boot: off)
#   LAB_DIR=$OUT/lab    bootd lab --dir (image state; its package cache is a
#                       symlink to DEBS)
#   SUITE=bookworm      the Debian release of the image all four boot
#                       (bookworm or trixie)
#   REUSE_IMAGE=0       1: keep an image that another bootd build made (by
#                       default it is built again, packages from the cache)
#   DEBS=/var/cache/bootd-lab/debs
#   PEER_MODULES=netboot   initramfs-tools MODULES= of the peer's initrd
#   LIMIT_MODULES=most     MODULES= of the limit's initrd (Debian's default)
#   KARGS="console=tty0 console=ttyS0,115200n8 quiet"  kernel arguments the
#                       peer and the limit add (what bootd's lab nodes get)
#   TIMEOUT=6m          per boot
#   PREPARE_ONLY=0      1: build and prepare everything, boot nothing (for
#                       bench/storm.sh); writes OUT/prepared.env
#   WAIT_IDLE=1         wait (polling every 30 s) until no qemu-system process
#                       runs on the machine, before building and again before
#                       the first boot
#
# Everything this script starts is stopped by PID on exit (the labs' processes
# by lab.Lab.Down, which checks each PID's start time), and its namespaces
# (brace-bd-*, brace-peer-*, brace-limit-*) are removed. The image tree is
# never written: initrds are made in an overlay (tmpfs upper) in a private
# mount namespace, which takes its mounts with it when it ends.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

ROUNDS=${ROUNDS:-2}
OUT=${OUT:-/var/tmp/bootrace}
FIRMWARES=${FIRMWARES:-bios,uefi}
SYSTEMS=${SYSTEMS:-bootd,bootd-tftp,peer,limit}
LAB_DIR=${LAB_DIR:-$OUT/lab}
DEBS=${DEBS:-/var/cache/bootd-lab/debs}
PEER_MODULES=${PEER_MODULES:-netboot}
LIMIT_MODULES=${LIMIT_MODULES:-most}
KARGS=${KARGS:-console=tty0 console=ttyS0,115200n8 quiet}
TIMEOUT=${TIMEOUT:-6m}
WAIT_IDLE=${WAIT_IDLE:-1}
REUSE_IMAGE=${REUSE_IMAGE:-0}
SUITE=${SUITE:-bookworm}

PEER_SERVER=10.214.0.1 # the peer's master namespace (bench/boot/main.go)
BIN=$OUT/bin
WORK=$OUT/work

PIDS=()

# ---------------------------------------------------------------- cleanup --


cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		# bootrace run takes its node and servers down itself on SIGTERM.
		stop_pid "${PIDS[i]}" 30
	done
	if [[ -x $BIN/bootrace ]]; then
		"$BIN/bootrace" cleanup -out "$OUT" -dir "$LAB_DIR" || true
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_bg CMD...: runs CMD as a tracked child and waits for it (so that the
# trap can stop it by PID).
run_bg() {
	"$@" &
	local pid=$!
	PIDS+=("$pid")
	local rc=0
	wait "$pid" || rc=$?
	local keep=() p
	for p in "${PIDS[@]}"; do
		[[ $p == "$pid" ]] || keep+=("$p")
	done
	PIDS=("${keep[@]}")
	return "$rc"
}

[[ $(id -u) == 0 ]] || die "run as root (namespaces, taps, mounts)"

# ------------------------------------------------------------ environment --

install_deps() {
	local need=() p
	for p in qemu-system-x86 ipxe-qemu ovmf pxelinux syslinux-common syslinux-efi ipxe dnsmasq-base \
		iproute2 mmdebstrap nfs-ganesha nfs-ganesha-vfs rpcbind initramfs-tools e2fsprogs util-linux; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
	done
	if ((${#need[@]})); then
		log "installing ${need[*]}"
		apt-get -o DPkg::Lock::Timeout=600 update -qq || true
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >&2
	fi
	for p in ganesha.nfsd rpcbind; do
		if pgrep -x "$p" >/dev/null; then
			log "note: a host $p runs (pid $(pgrep -x "$p" | tr '\n' ' ')); not used: the peer runs its own in its namespaces"
		fi
	done
}

build() {
	mkdir -p "$BIN"
	log "building bootd and bench/boot from $REPO ($(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'))"
	(cd "$REPO" && CGO_ENABLED=0 go build -ldflags='-s -w' -o "$BIN/bootd" ./cmd/bootd) || die "building bootd"
	(cd "$REPO" && CGO_ENABLED=0 go build -o "$BIN/bootrace" ./bench/boot) || die "building bench/boot"
}

# The bootd lab's state dir, with the lab tests' shared package cache. The
# image is rebuilt when another bootd built it (image preparation changes
# with bootd), unless REUSE_IMAGE=1.
prepare_lab() {
	local sum built=0
	mkdir -p "$LAB_DIR/state/cache" "$DEBS"
	[[ -e $LAB_DIR/state/cache/debs ]] || ln -s "$DEBS" "$LAB_DIR/state/cache/debs"
	sum=$(sha256sum "$BIN/bootd" | cut -d' ' -f1)
	if [[ -d $LAB_DIR/state/images/$SUITE && $REUSE_IMAGE != 1 &&
		$(cat "$LAB_DIR/image-built-by-$SUITE" 2>/dev/null) != "$sum" ]]; then
		log "the image in $LAB_DIR was built by another bootd: building it again (REUSE_IMAGE=1 keeps it)"
		rm -rf "$LAB_DIR/state/images/$SUITE"
	fi
	[[ -d $LAB_DIR/state/images/$SUITE ]] || built=1
	run_bg "$BIN/bootrace" prepare -dir "$LAB_DIR" -bootd "$BIN/bootd" -suite "$SUITE" >/dev/null || die "preparing the bootd lab"
	((!built)) || echo "$sum" >"$LAB_DIR/image-built-by-$SUITE"
	GEN=$(readlink -f "$LAB_DIR/state/images/$SUITE/current")
	TREE=$GEN/root
	[[ -d $TREE/etc ]] || die "no image tree at $TREE"
	local k
	k=$(find "$TREE/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
	KVER=$k
	[[ -f $TREE/boot/vmlinuz-$KVER ]] || die "no kernel $TREE/boot/vmlinuz-$KVER"
	KERNEL=$TREE/boot/vmlinuz-$KVER
	log "image tree $TREE, kernel $KVER"
}

# build_initrd OUTFILE MODULES BOOT: Debian's mkinitramfs, run in a chroot of
# an overlay of the image tree (upper on a tmpfs), in a private mount
# namespace: the tree is never written and every mount goes when it ends.
build_initrd() {
	local out=$1 modules=$2 boot=$3 scratch=$WORK/scratch
	mkdir -p "$scratch"
	log "mkinitramfs MODULES=$modules BOOT=$boot for $KVER -> $out"
	# shellcheck disable=SC2016 # expanded by the inner bash
	run_bg unshare --mount --propagation private -- bash -euc '
		tree=$1 kver=$2 out=$3 modules=$4 boot=$5 s=$6
		mount -t tmpfs -o mode=755 bootrace-scratch "$s"
		mkdir "$s/upper" "$s/work" "$s/m"
		mount -t overlay -o "lowerdir=$tree,upperdir=$s/upper,workdir=$s/work" bootrace-overlay "$s/m"
		m=$s/m
		mount -t proc proc "$m/proc"
		mount -t sysfs sys "$m/sys"
		mount --rbind /dev "$m/dev"
		mkdir -p "$m/tmp" "$m/etc/initramfs-tools/conf.d"
		sed -i "s/^MODULES=.*/MODULES=$modules/" "$m/etc/initramfs-tools/initramfs.conf"
		echo "BOOT=$boot" >"$m/etc/initramfs-tools/conf.d/bootrace"
		if [[ $boot == nfs ]]; then
			# What an admin adds to make the shared read-only NFS root
			# writable per node: a tmpfs overlay on top of it, mounted
			# after the NFS mount (nfs-bottom). Without it systemd starts
			# on a read-only / and units fail (logind, ssh, rsyslog).
			echo overlay >>"$m/etc/initramfs-tools/modules"
			mkdir -p "$m/etc/initramfs-tools/scripts/nfs-bottom"
			cat >"$m/etc/initramfs-tools/scripts/nfs-bottom/overlay" <<-"SCRIPT"
				#!/bin/sh
				case $1 in prereqs) exit 0 ;; esac
				. /scripts/functions
				mkdir -p /run/root-ro /run/root-rw
				mount -t tmpfs -o mode=755 root-rw /run/root-rw
				mkdir -p /run/root-rw/upper /run/root-rw/work
				mount -o move "$rootmnt" /run/root-ro
				mount -t overlay -o lowerdir=/run/root-ro,upperdir=/run/root-rw/upper,workdir=/run/root-rw/work overlay "$rootmnt" ||
					panic "overlay root failed"
			SCRIPT
			chmod 755 "$m/etc/initramfs-tools/scripts/nfs-bottom/overlay"
		fi
		chroot "$m" mkinitramfs -o /tmp/bootrace-initrd.img "$kver"
		cp "$m/tmp/bootrace-initrd.img" "$out.tmp"
		mv "$out.tmp" "$out"
	' _ "$TREE" "$KVER" "$out" "$modules" "$boot" "$scratch" >"$out.log" 2>&1 ||
		{ tail -n 30 "$out.log" >&2; die "mkinitramfs failed; see $out.log"; }
	chmod 644 "$out"
	log "  $(du -h "$out" | cut -f1) ($(grep -c . "$out.log" || true) lines of mkinitramfs output in $out.log)"
}

# The peer's TFTP tree: bios/ (pxelinux.0) and efi64/ (syslinux.efi), each
# with its own config, kernel and initrd: both loaders look for everything
# relative to their own directory. dnsmasq drops privileges: all of it must
# be readable by anyone.
make_tftp() {
	local t=$WORK/tftp d cfg
	rm -rf "$t"
	mkdir -p "$t/bios/pxelinux.cfg" "$t/efi64/pxelinux.cfg"
	cp /usr/lib/PXELINUX/pxelinux.0 /usr/lib/syslinux/modules/bios/ldlinux.c32 "$t/bios/"
	cp /usr/lib/SYSLINUX.EFI/efi64/syslinux.efi /usr/lib/syslinux/modules/efi64/ldlinux.e64 "$t/efi64/"
	for d in bios efi64; do
		cp "$KERNEL" "$t/$d/vmlinuz"
		ln "$WORK/peer-initrd.img" "$t/$d/initrd.img"
		# SERIAL: pxelinux shows nothing on a serial console without it.
		# IPAPPEND 2: BOOTIF=, so the initrd configures the NIC it booted from.
		cat >"$t/$d/pxelinux.cfg/default" <<-EOF
			SERIAL 0 115200
			DEFAULT peer
			PROMPT 0
			TIMEOUT 0
			LABEL peer
			  KERNEL vmlinuz
			  INITRD initrd.img
			  IPAPPEND 2
			  APPEND root=/dev/nfs nfsroot=$PEER_SERVER:$TREE,vers=3,tcp ip=dhcp boot=nfs ro $KARGS
		EOF
	done
	chmod -R a+rX "$t"
	cfg=$t/bios/pxelinux.cfg/default
	log "peer TFTP tree $t; $(grep APPEND "$cfg" | sed 's/^ *//')"
}

# The limit's disk: the tree in an ext4 image (a copy is booted each time).
make_disk() {
	local mb
	mb=$(du -sm "$TREE" | cut -f1)
	log "mkfs.ext4 -d $TREE ($mb MiB) -> $WORK/limit-disk.img"
	rm -f "$WORK/limit-disk.img.tmp"
	truncate -s $((mb * 2 + 512))M "$WORK/limit-disk.img.tmp"
	mkfs.ext4 -q -F -L bootrace-root -d "$TREE" "$WORK/limit-disk.img.tmp" >"$WORK/mkfs.log" 2>&1 ||
		{ cat "$WORK/mkfs.log" >&2; die "mkfs.ext4 failed"; }
	mv "$WORK/limit-disk.img.tmp" "$WORK/limit-disk.img"
}

# What the peer and the limit boot, rebuilt when the image generation, the
# kernel or a knob changed.
prepare_artifacts() {
	mkdir -p "$WORK"
	chmod 755 "$OUT" "$WORK"
	local stamp
	stamp="$GEN $(stat -c %Y "$GEN/image.json" 2>/dev/null || echo 0) $KVER $PEER_MODULES $LIMIT_MODULES $KARGS v2"
	if [[ -f $WORK/stamp && $(cat "$WORK/stamp") == "$stamp" && -f $WORK/peer-initrd.img &&
		-f $WORK/limit-initrd.img && -f $WORK/limit-disk.img && -f $WORK/tftp/bios/vmlinuz ]]; then
		log "peer and limit files are current (delete $WORK/stamp to rebuild)"
		return
	fi
	rm -f "$WORK/stamp"
	build_initrd "$WORK/peer-initrd.img" "$PEER_MODULES" nfs
	build_initrd "$WORK/limit-initrd.img" "$LIMIT_MODULES" local
	make_tftp
	make_disk
	echo "$stamp" >"$WORK/stamp"
}

# Everything the boots read, in the page cache before the first one, so
# that no system pays for a cold cache the others do not.
warm_cache() {
	log "warming the page cache (image tree, initrds, disk image)"
	tar -C "$TREE" -cf - . | cat >/dev/null
	cat "$WORK/peer-initrd.img" "$WORK/limit-initrd.img" "$WORK/limit-disk.img" "$KERNEL" \
		"$GEN/boot/vmlinuz" "$GEN/boot/initrd.img" >/dev/null
}

wait_idle() {
	[[ $WAIT_IDLE == 1 ]] || return 0
	local said=0
	while pgrep -f qemu-system >/dev/null; do
		if ((!said)); then
			log "a qemu-system process is running (not ours): waiting until none is (polling every 30 s; WAIT_IDLE=0 skips)"
			said=1
		fi
		sleep 30
	done
}

meta() {
	{
		echo "date: $(date -Is)"
		# shellcheck source=/dev/null
		echo "host: $(. /etc/os-release && echo "$PRETTY_NAME"), $(nproc) CPUs, kernel $(uname -r)"
		echo "bootd: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
		echo "image: $GEN (kernel $KVER)"
		echo "qemu: $(qemu-system-x86_64 --version | head -n1)"
		echo "dnsmasq: $(dnsmasq --version | head -n1)"
		echo "ganesha: $(dpkg-query -W -f='${Version}' nfs-ganesha)"
		echo "syslinux: $(dpkg-query -W -f='${Version}' syslinux-common)"
		echo "ovmf: $(dpkg-query -W -f='${Version}' ovmf)"
		echo "ipxe-qemu: $(dpkg-query -W -f='${Version}' ipxe-qemu)"
		echo "peer initrd: $(du -h "$WORK/peer-initrd.img" | cut -f1) MODULES=$PEER_MODULES"
		echo "limit initrd: $(du -h "$WORK/limit-initrd.img" | cut -f1) MODULES=$LIMIT_MODULES"
		echo "bootd initrd: $(du -h "$GEN/boot/initrd.img" | cut -f1)"
		echo "kernel args (peer, limit): $KARGS"
		echo "rounds: $ROUNDS; firmwares: $FIRMWARES; systems: $SYSTEMS"
	} >"$OUT/meta.txt"
}

# ------------------------------------------------------------------- main --

T0=$SECONDS
mkdir -p "$OUT"
install_deps
wait_idle # the image build and mkinitramfs would slow someone else's QEMU
build
prepare_lab
prepare_artifacts
if [[ ${PREPARE_ONLY:-0} == 1 ]]; then
	# What bench/storm.sh uses: the image, the peer's initrd and TFTP tree.
	echo "TREE=$TREE" >"$OUT/prepared.env"
	echo "KERNEL=$KERNEL" >>"$OUT/prepared.env"
	echo "GEN=$GEN" >>"$OUT/prepared.env"
	echo "WORK=$WORK" >>"$OUT/prepared.env"
	echo "BIN=$BIN" >>"$OUT/prepared.env"
	log "prepared (PREPARE_ONLY=1): $OUT/prepared.env"
	exit 0
fi
wait_idle
warm_cache
meta
rm -rf "$OUT/consoles" "$OUT/logs"
log "booting: $ROUNDS round(s) of ${FIRMWARES//,/ } x ${SYSTEMS//,/ }"
run_bg "$BIN/bootrace" run -dir "$LAB_DIR" -bootd "$BIN/bootd" -out "$OUT" -rounds "$ROUNDS" \
	-firmwares "$FIRMWARES" -systems "$SYSTEMS" -timeout "$TIMEOUT" -tree "$TREE" -tftp "$WORK/tftp" \
	-limit-kernel "$KERNEL" -limit-initrd "$WORK/limit-initrd.img" -limit-disk "$WORK/limit-disk.img" \
	-append "$KARGS"
echo "whole run (install, build, prepare, boots): $((SECONDS - T0)) s" | tee -a "$OUT/table.txt"
log "results in $OUT: table.txt, raw.tsv, raw.jsonl, consoles/, logs/, meta.txt"
