#!/usr/bin/env bash
# Builds Hongyan, starts it on a throwaway data directory on a free loopback port,
# probes every endpoint of the Matrix spec, and rewrites docs/spec-coverage.md. Fails
# when an endpoint that docs/spec-coverage.md listed as covered is missing now.
#
#   scripts/spec-coverage.sh                      # probe the rows of docs/spec-coverage.md (the test command)
#   SPEC_REPO=DIR scripts/spec-coverage.sh        # measure a matrix-spec checkout's data/api (a release tag)
#
# The spec's OpenAPI files live only in its GitHub repository (npm's @matrix-org/spec
# stopped shipping them after 1.10.1), which CI cannot reach; so a session brings the
# repository in (like Sytest, never committed), checks out the release tag, and
# regenerates the table with SPEC_REPO, and the test command re-probes the table.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d /tmp/hongyan-spec.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

go build -o "$tmp/hongyan" ./cmd/hongyan
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fedport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$tmp/hongyan" run --data-dir "$tmp/data" --listen "127.0.0.1:$port" --federation-listen "127.0.0.1:$fedport" \
  --server-name "localhost:$fedport" --rate-limit=false --log-level warn >"$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1 && break
  sleep 0.1
done
baseline=()
[ -f docs/spec-coverage.md ] && baseline=(-baseline docs/spec-coverage.md)
spec=()
if [ -n "${SPEC_REPO:-}" ]; then
  version="$(git -C "$SPEC_REPO" describe --tags --always 2>/dev/null || echo unknown) (matrix-org/matrix-spec, commit $(git -C "$SPEC_REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown))"
  spec=(-spec-repo "$SPEC_REPO" -spec-version "$version")
fi
go run ./scripts/spec-coverage "${spec[@]}" -hs "http://127.0.0.1:$port" -fed "https://127.0.0.1:$fedport" "${baseline[@]}" -out docs/spec-coverage.md
