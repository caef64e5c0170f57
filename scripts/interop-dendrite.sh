#!/usr/bin/env bash
# Federates Hongyan with Dendrite v0.13.8 on loopback: installs Dendrite's binaries
# (once, into $(go env GOPATH)/bin) and runs the interop suite in
# federation/interop_test.go. Usage: scripts/interop-dendrite.sh [go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."
gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/dendrite" ] || [ ! -x "$gobin/generate-config" ] || [ ! -x "$gobin/generate-keys" ]; then
  echo "installing Dendrite v0.13.8 (a few minutes, once)" >&2
  go install github.com/matrix-org/dendrite/cmd/dendrite@v0.13.8 \
    github.com/matrix-org/dendrite/cmd/generate-config@v0.13.8 \
    github.com/matrix-org/dendrite/cmd/generate-keys@v0.13.8
fi
HONGYAN_DENDRITE_BIN="$gobin" HONGYAN_TEST_DATABASES=sqlite \
  go test -tags interop -count=1 -run TestDendriteInterop "$@" ./federation/
