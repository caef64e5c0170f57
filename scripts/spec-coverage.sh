#!/usr/bin/env bash
# Builds Hongyan, starts it on a throwaway data directory on a free loopback port,
# probes every endpoint of the Matrix spec, and rewrites docs/spec-coverage.md. Fails
# when an endpoint that docs/spec-coverage.md listed as covered is missing now.
set -euo pipefail
cd "$(dirname "$0")/.."
# The newest @matrix-org/spec release that ships the API definitions (.d.ts files
# generated from the OpenAPI); later releases ship only sas-emoji.json.
SPEC_VERSION=1.10.1

tmp=$(mktemp -d /tmp/hongyan-spec.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

(cd "$tmp" && npm pack --silent "@matrix-org/spec@$SPEC_VERSION" >/dev/null && tar xzf matrix-org-spec-*.tgz)
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
go run ./scripts/spec-coverage -spec "$tmp/package" -hs "http://127.0.0.1:$port" -fed "https://127.0.0.1:$fedport" "${baseline[@]}" -out docs/spec-coverage.md
