# bench/lib.sh — what the bench scripts share: logging, and stopping what
# they started by PID. Sourced, not run.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

die() {
	log "FATAL: $*"
	exit 1
}

# stop_pid PID [GRACE]: SIGTERM, then SIGKILL after GRACE seconds (5).
stop_pid() {
	local pid=$1 grace=${2:-5} i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
