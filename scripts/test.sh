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
echo "== fuzzing the decoders briefly"
go test -run '^$' -fuzz '^FuzzDispatch$' -fuzztime 20s ./nfs
go test -run '^$' -fuzz '^FuzzReadRecord$' -fuzztime 10s ./nfs
go test -run '^$' -fuzz '^FuzzReply$' -fuzztime 15s ./dhcp
go test -run '^$' -fuzz '^FuzzParseRequest$' -fuzztime 10s ./tftp
echo "== all tests passed"
