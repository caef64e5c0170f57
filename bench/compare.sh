#!/usr/bin/env bash
# Runs the load harness against Dendrite v0.13.8 and Hongyan, one after the other on
# this machine, with the same database kind (SQLite, then PostgreSQL), rate limits
# off on both, and writes the side-by-side table into bench/RESULTS.md.
#
#   bench/compare.sh                    # both database kinds, default sizes
#   bench/compare.sh sqlite             # one kind
#   LOADGEN_ARGS="-sync-rooms 100" bench/compare.sh   # other sizes (see loadgen -h)
#
# Dendrite is built from the Go module proxy on first use (a few minutes); PostgreSQL
# is a throwaway cluster from scripts/postgres.sh. Takes 10–20 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(sqlite postgres)

gobin=$(go env GOPATH)/bin
if [ ! -x "$gobin/dendrite" ]; then
  echo "== building Dendrite v0.13.8" >&2
  go install github.com/matrix-org/dendrite/cmd/dendrite@v0.13.8 \
    github.com/matrix-org/dendrite/cmd/generate-config@v0.13.8 \
    github.com/matrix-org/dendrite/cmd/generate-keys@v0.13.8
fi

work=$(mktemp -d /tmp/hongyan-compare.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/postgres.sh stop "$work/pg" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building Hongyan and the harness" >&2
go build -o "$work/hongyan" ./cmd/hongyan
go build -o "$work/loadgen" ./bench/cmd/loadgen
go build -o "$work/report" ./bench/cmd/report

pgurl=""
if [[ " ${kinds[*]} " == *" postgres "* ]]; then
  pgurl=$(scripts/postgres.sh start "$work/pg")
  for db in dendrite hongyan; do
    psql "$pgurl" -qc "CREATE DATABASE $db" >/dev/null
  done
fi
dburl() { echo "${pgurl%/*}/$1?sslmode=disable"; }

port=18448
results="$work/results.jsonl"

# wait_up URL PID: waits for the client API and prints the start-up time in ms.
wait_up() {
  local start=$1 url=$2 pid=$3
  for _ in $(seq 1 600); do
    if curl -sf "$url/_matrix/client/versions" >/dev/null 2>&1; then
      echo $(( ($(date +%s%N) - start) / 1000000 ))
      return
    fi
    kill -0 "$pid" 2>/dev/null || { echo "server exited during start-up" >&2; return 1; }
    sleep 0.05
  done
  echo "server did not start" >&2
  return 1
}

run() { # run SERVER KIND
  local server=$1 kind=$2 dir="$work/$1-$2" url="http://127.0.0.1:$port" pid start ms
  mkdir -p "$dir"
  echo "== $server on $kind" >&2
  case $server in
  dendrite)
    (cd "$dir" && "$gobin/generate-keys" --private-key matrix_key.pem >/dev/null)
    if [ "$kind" = postgres ]; then
      "$gobin/generate-config" -dir "$dir" -server localhost -db "$(dburl dendrite)" >"$dir/dendrite.yaml"
    else
      "$gobin/generate-config" -dir "$dir" -server localhost >"$dir/dendrite.yaml"
    fi
    # Open registration and no rate limits, like Hongyan below; logs at warn so
    # logging costs neither server much.
    sed -i -e 's/registration_disabled: true/registration_disabled: false/' \
      -e '/rate_limiting:/,/threshold/ s/enabled: true/enabled: false/' \
      -e 's/^\(\s*\)level: info/\1level: warn/' "$dir/dendrite.yaml"
    start=$(date +%s%N)
    (cd "$dir" && exec "$gobin/dendrite" -config dendrite.yaml -http-bind-address "127.0.0.1:$port" \
      -really-enable-open-registration >"$dir/stdout.log" 2>&1) &
    pid=$!
    ;;
  hongyan)
    local args=(--data-dir "$dir" --listen "127.0.0.1:$port" --server-name localhost --rate-limit=false --log-level warn)
    [ "$kind" = postgres ] && args+=(--database-url "$(dburl hongyan)")
    start=$(date +%s%N)
    "$work/hongyan" run "${args[@]}" >"$dir/stdout.log" 2>&1 &
    pid=$!
    ;;
  esac
  pids+=("$pid")
  ms=$(wait_up "$start" "$url" "$pid")
  echo "{\"scenario\":\"startup\",\"label\":\"$server-$kind\",\"ms\":$ms}" >>"$results"
  # shellcheck disable=SC2086
  "$work/loadgen" -hs "$url" -pid "$pid" -label "$server-$kind" ${LOADGEN_ARGS:-} | tee -a "$results" >&2 || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  port=$((port + 1))
}

for kind in "${kinds[@]}"; do
  run dendrite "$kind"
  run hongyan "$kind"
done

cp "$results" bench/last-compare.jsonl
"$work/report" -machine "$(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB RAM" \
  -settings "${LOADGEN_ARGS:-defaults}" -insert bench/RESULTS.md <"$results"
echo "== written to bench/RESULTS.md (raw lines in bench/last-compare.jsonl)" >&2
