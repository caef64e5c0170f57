#!/usr/bin/env bash
# Runs Sytest against Hongyan with the homeserver driver in lib/ (modelled on Sytest's
# Dendrite driver). Sytest is brought in at run time and never committed; the Perl
# set-up it needs on these machines is described in ../../shared/sytest/README.md
# (Debian Perl packages plus two stand-ins, and the run.sh that sets the Perl paths).
#
#   sytest/run.sh SYTEST_CHECKOUT NAHS_CHECKOUT [all|whitelist] [TEST_FILE...]
#
# "whitelist" (the default) runs the tests in sytest-whitelist and fails if any of
# them fails; "all" runs everything except sytest-blacklist, to find newly passing
# tests. Results go to sytest/out/ (results.tap, passed.txt, failed.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
st=$(cd "${1:?sytest checkout}" && pwd)
nahs=$(cd "${2:?Net-Async-HTTP-Server checkout}" && pwd)
mode=${3:-whitelist}
shift $(( $# < 3 ? $# : 3 ))  # the rest: test files (tests/…) to run alone
shared=${SYTEST_SHARED:-$here/../../shared/sytest}
out=$here/out
mkdir -p "$out/bin"

(cd "$here/.." && go build -o "$out/bin/hongyan" ./cmd/hongyan)
cp -r "$here/lib/SyTest/." "$st/lib/SyTest/"

args=(-I Hongyan -d "$out/bin" -B "${SYTEST_BLACKLIST:-$here/sytest-blacklist}")
[ "$mode" = whitelist ] && args+=(-W "$here/sytest-whitelist")
args+=("$@")
"$shared/run.sh" "$st" "$nahs" "$out/work" "$out/results.tap" -- "${args[@]}"

# TAP lines: "ok N name", "ok N name # skip why" (a precondition is missing),
# "not ok N name # TODO …" (blacklisted, or outside the whitelist in whitelist mode:
# expected to fail), "not ok N name" (a real failure).
tap() { grep -E "^(not )?ok [0-9]+ " "$out/results.tap" || true; }
name() { sed -E 's/^(not )?ok [0-9]+ //; s/ # .*//; s/ \([0-9]+ subtests\)$//' | sort -u; }
# pick PATTERN [grep flags]: the TAP lines matching; an empty selection is no
# error (under pipefail a grep that finds nothing would end the script here, before
# the counts are written).
pick() { tap | { grep "$@" || true; }; }
pick -E '^ok ' | { grep -viE ' # (skip|todo)' || true; } | name > "$out/passed.txt"
pick -E '^not ok ' | { grep -vi ' # todo' || true; } | name > "$out/failed.txt"
pick -i ' # skip' | name > "$out/skipped.txt"
pick -E '^not ok ' | { grep -i ' # todo' || true; } | name > "$out/expected-fail.txt"
echo "passed: $(wc -l < "$out/passed.txt"), failed: $(wc -l < "$out/failed.txt"), skipped: $(wc -l < "$out/skipped.txt"), expected to fail (blacklisted or not whitelisted): $(wc -l < "$out/expected-fail.txt")"
if [ "$mode" = whitelist ] && [ -s "$out/failed.txt" ]; then
  echo "whitelisted tests failed:"; cat "$out/failed.txt"; exit 1
fi
