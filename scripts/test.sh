#!/usr/bin/env bash
# test.sh: every test bootd has, as CI runs them. Needs root (device nodes,
# privileged ports; later: network namespaces and QEMU).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

export PATH="$PATH:/usr/local/go/bin"
echo "== go vet"
go vet ./...
echo "== go test (all: unit, real clients, QEMU boots, the end-to-end lab)"
go test -count=1 -timeout 45m ./...
echo "== fuzzing every decoder briefly (bench/fuzz.sh, each target)"
# Execution-count budgets, not durations: Go 1.26's fuzz coordinator can end
# a timed run with "context deadline exceeded" and no failing input
# (golang/go#75804); a count budget never reaches that path. A few seconds a
# target here; FUZZTIME=10m bash bench/fuzz.sh is the long run.
FUZZTIME=200000x bash bench/fuzz.sh
echo "== all tests passed"
