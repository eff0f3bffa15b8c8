# quiet.sh: sourced by bench/dhcp.sh and bench/tftp.sh. Waits for a quiet
# machine before a measurement and tells whether it stayed quiet during it.
# The caller defines log (which appends to its raw output) and RAW.

# cpu_busy: percent of all CPUs busy over 2 s, from /proc/stat.
cpu_busy() {
  local a b i tot=0 idle
  read -ra a < <(head -1 /proc/stat)
  sleep 2
  read -ra b < <(head -1 /proc/stat)
  idle=$((b[4] + b[5] - a[4] - a[5]))
  for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  echo $((tot > 0 ? 100 * (tot - idle) / tot : 0))
}
# wait_quiet: until bench/nfs.sh is gone (the character class keeps pgrep
# from matching a shell whose command line holds the pattern) and the CPUs
# are under QUIET_BUSY% busy; at most QUIET_WAIT s, then go on with a warning.
QUIET_BUSY=${QUIET_BUSY:-25}
QUIET_WAIT=${QUIET_WAIT:-3600}
wait_quiet() {
  local waited=0 busy
  while :; do
    if pgrep -f 'bench/[n]fs\.sh' >/dev/null; then
      busy="bench/nfs.sh running"
    else
      busy=$(cpu_busy)
      if ((busy < QUIET_BUSY)); then
        echo "machine quiet: ${busy}% CPU busy"
        return 0
      fi
      busy="${busy}% CPU busy"
    fi
    if ((waited >= QUIET_WAIT)); then
      echo "WARNING: going on although the machine is not quiet ($busy); results may be disturbed" | tee -a "$RAW" >&2
      return 0
    fi
    if ((waited % 60 == 0)); then echo "waiting for a quiet machine ($busy)..."; fi
    sleep 8
    waited=$((waited + 10))
  done
}
# still_quiet: whether the machine is quiet right after a measurement
# (sets quiet_why otherwise). A measurement after which it is not is run
# again, at most MAX_REDO times.
MAX_REDO=${MAX_REDO:-3}
disturbed=0
still_quiet() {
  local busy
  if pgrep -f 'bench/[n]fs\.sh' >/dev/null; then
    quiet_why="bench/nfs.sh running"
    return 1
  fi
  busy=$(cpu_busy)
  quiet_why="${busy}% CPU busy"
  ((busy < QUIET_BUSY))
}
# redo_check WHAT: after a measurement; 0 to keep it, 1 to run it again.
redo_check() {
  if still_quiet; then return 0; fi
  tries=$((tries + 1))
  if ((tries > MAX_REDO)); then
    log "  machine busy after $1; kept it all the same"
    disturbed=$((disturbed + 1))
    return 0
  fi
  log "  machine got busy during $1 ($quiet_why); running it again"
  return 1
}

