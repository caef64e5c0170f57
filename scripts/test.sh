#!/usr/bin/env bash
# Runs every test of Hongyan against real services, which it starts itself on
# loopback and stops afterwards: a throwaway PostgreSQL cluster (installed from Debian
# packages if missing) and a MinIO server for the S3 media backend (built with
# go install if missing, about 5 minutes once per machine). SQLite and the embedded
# NATS need nothing. Then the spec coverage probe (npm fetches the spec's API
# definitions), the federation interop suite with Dendrite (installed with go
# install if missing, a few minutes once per machine), and short fuzzing of the
# native protocol's and federation's decoders.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh ./clientapi/... # some packages; extra args go to `go test`
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/hongyan-test.XXXXXX)
chmod 755 "$work" # the postgres user must reach its cluster directory inside
cleanup() {
  scripts/postgres.sh stop "$work/pg" || true
  scripts/minio.sh stop "$work/minio" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting PostgreSQL"
HONGYAN_TEST_POSTGRES=$(scripts/postgres.sh start "$work/pg")
export HONGYAN_TEST_POSTGRES
echo "   $HONGYAN_TEST_POSTGRES"

echo "== starting MinIO"
HONGYAN_TEST_MINIO=$(scripts/minio.sh start "$work/minio")
export HONGYAN_TEST_MINIO
echo "   ${HONGYAN_TEST_MINIO/:*@/://…@}"

if ! command -v tmux >/dev/null; then
  echo "== installing tmux (the terminal client's test drives it)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux) >&2
fi

echo "== matrix-js-sdk for the real-client tests"
if ! command -v npm >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >&2
fi
(cd clientapi/testdata/jssdk && npm ci --silent --no-audit --no-fund)

pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(./...)

# goolm selects mautrix-go's pure-Go Olm for the end-to-end encryption test, so no
# C library is needed.
tags=goolm

echo "== go vet"
go vet -tags "$tags" ./...

echo "== staticcheck"
# honnef.co/go/tools, installed once per machine (about a minute); the tree is kept
# clean of its findings.
staticcheck=$(command -v staticcheck || echo "$(go env GOPATH)/bin/staticcheck")
if [ ! -x "$staticcheck" ]; then
  GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.8.2 >&2
fi
"$staticcheck" -tags "$tags" ./...

echo "== spec coverage"
# Probes a fresh server for every endpoint of the spec and fails if one that
# docs/spec-coverage.md lists as covered stopped answering.
scripts/spec-coverage.sh

echo "== go test"
# -race catches data races in the server's concurrent paths; packages run in
# parallel (one per core) and each package's tests on both engines in parallel.
go test -tags "$tags" -race -count=1 -timeout 20m "${pkgs[@]}"

if [ ${#pkgs[@]} -eq 1 ] && [ "${pkgs[0]}" = ./... ]; then
  echo "== federation interop with Dendrite v0.13.8"
  # Installs Dendrite's binaries once (a few minutes on a fresh machine), then
  # federates it with Hongyan both ways (federation/interop_test.go).
  scripts/interop-dendrite.sh
fi

echo "== fuzzing the native protocol's decoders briefly"
# Each target runs on its seed corpus (native/testdata/fuzz) plus 30 000 new inputs
# (a count, not a duration: a timed run on a loaded machine can end mid-input and
# report "context deadline exceeded" without anything being wrong).
for target in FuzzReadFrame FuzzJSON FuzzMsgPack FuzzCBOR; do
  go test -run XXX -fuzz "^${target}\$" -fuzztime 30000x ./native/
done

echo "== fuzzing federation's decoders briefly"
# The /send body and PDU parsing every event from another server passes before
# anything is looked up (federation/decode.go), seeded from federation/testdata/fuzz.
# Parsing an event costs more than a native frame: fewer inputs in the same time.
for target in FuzzTransaction FuzzPDU; do
  go test -tags "$tags" -run XXX -fuzz "^${target}\$" -fuzztime 20000x ./federation/
done
