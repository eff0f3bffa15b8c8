#!/usr/bin/env bash
# package.sh: build the Debian package dist/bootd_VERSION_amd64.deb: the
# static bootd, its systemd unit, the commented config (a conffile), the
# man pages and bash completion bootd generates from its own --help text.
#
# The packager is nfpm (github.com/goreleaser/nfpm), run with a pinned
# version through `go run`: a declarative packaging/nfpm.yaml instead of a
# hand-assembled control file and md5sums, and no module added to bootd's
# go.mod. The first run builds nfpm (about a minute); later runs reuse
# Go's build cache.
#
# Environment: DIST (default dist) is where the .deb goes; BOOTD_VERSION
# overrides the version, which otherwise comes from `git describe --tags`
# (a tag vX.Y.Z) or is 0.0.0+gitDATE.SHA, DATE the commit's; MAINTAINER
# ("Name <address>") is the site's who builds it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0

# debian_version turns git's description of HEAD into a Debian version:
# v1.2.0 -> 1.2.0, v1.2.0-rc1 -> 1.2.0~rc1 (sorts before 1.2.0),
# v1.2.0-5-gabc1234 -> 1.2.0+git5.gabc1234 (sorts after it).
debian_version() {
  local d
  if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    d=${d#v}
    local ahead=""
    if [[ $d =~ ^(.*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
      d=${BASH_REMATCH[1]}
      ahead="+git${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
    fi
    echo "${d//-/\~}${ahead}"
  else
    echo "0.0.0+git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short HEAD)"
  fi
}

VERSION=${BOOTD_VERSION:-$(debian_version)}
if ! dpkg --validate-version "$VERSION" 2>/dev/null; then
  echo "package.sh: $VERSION is not a valid Debian version" >&2
  exit 1
fi
COMMIT=$(git rev-parse --short HEAD)
DIST=${DIST:-dist}
STAGE="$DIST/stage"
rm -rf "$STAGE"
mkdir -p "$STAGE/man" "$STAGE/completion"

# Static (it is also the nodes' init), no build paths in it, version and
# commit for `bootd --version`.
CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT" \
  -o "$STAGE/bootd" ./cmd/bootd
"$STAGE/bootd" gen-docs --man "$STAGE/man" --completion "$STAGE/completion"
# Debian policy: man pages and larger docs are gzipped (-n: no name or
# timestamp, so the package is reproducible).
gzip -9n "$STAGE"/man/*.8
gzip -9n <README.md >"$STAGE/README.md.gz"
# Debian wants a changelog in every package: one entry, the build's.
export MAINTAINER=${MAINTAINER:-bootd maintainers <bootd@localhost>}
printf 'bootd (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- %s  %s\n' \
  "$VERSION" "$(git rev-parse HEAD)" "$MAINTAINER" "$(git log -1 --format=%cD)" | gzip -9n >"$STAGE/changelog.gz"

# Files in the package get the commit's time, not the build's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
deb="$DIST/bootd_${VERSION}_amd64.deb"
rm -f "$deb"
VERSION=$VERSION STAGE=$STAGE go run "$NFPM" package \
  --config packaging/nfpm.yaml --packager deb --target "$deb" >&2
echo "$deb"
