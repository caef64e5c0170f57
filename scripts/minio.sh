#!/usr/bin/env bash
# Starts a throwaway MinIO server on a free loopback port, building it first with
# `go install` if it is missing (about 5 minutes on 2 cores, once per machine), and
# prints its URL with credentials on stdout: http://USER:PASSWORD@127.0.0.1:PORT.
#   url=$(scripts/minio.sh start DIR)   # data in DIR/data, log in DIR/minio.log
#   scripts/minio.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop} dir=${2:?directory}

minio_bin() {
  local b
  b=$(command -v minio || true)
  [ -z "$b" ] && [ -x "$(go env GOPATH)/bin/minio" ] && b="$(go env GOPATH)/bin/minio"
  if [ -z "$b" ]; then
    echo "building minio with go install (once per machine)" >&2
    GOFLAGS= go install github.com/minio/minio@latest >&2
    b="$(go env GOPATH)/bin/minio"
  fi
  echo "$b"
}

case $cmd in
start)
  bin=$(minio_bin)
  mkdir -p "$dir/data"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000)))
  user=hongyan pass=hongyan-test-secret
  MINIO_ROOT_USER=$user MINIO_ROOT_PASSWORD=$pass MINIO_BROWSER=off MINIO_UPDATE=off \
    "$bin" server "$dir/data" --address "127.0.0.1:$port" --quiet >"$dir/minio.log" 2>&1 &
  echo $! >"$dir/minio.pid"
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/minio/health/live" >/dev/null 2>&1; then
      echo "http://$user:$pass@127.0.0.1:$port"
      exit 0
    fi
    sleep 0.2
  done
  echo "minio did not start; log:" >&2
  cat "$dir/minio.log" >&2
  exit 1
  ;;
stop)
  [ -f "$dir/minio.pid" ] && kill "$(cat "$dir/minio.pid")" 2>/dev/null || true
  rm -rf "$dir"
  ;;
esac
