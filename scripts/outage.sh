#!/usr/bin/env bash
# outage.sh: the long proof of issue 12, about 10 minutes under TCG, as
# root: a 60 s bootd outage under load, and bootd killed mid-boot (during
# the root mount and during the initrd download). CI runs the shorter
# update-and-restart scenario in TestEndToEnd.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export PATH="$PATH:/usr/local/go/bin"
BOOTD_LONG=1 go test -count=1 -timeout 40m -run '^TestOutages$' -v ./lab
