#!/usr/bin/env bash
# The project's test command: lint + type-check + build, then the test kinds in order.
# Usage: scripts/test.sh [unit|integration|system|e2e ...]   (default: all kinds that can run here)
# Each kind's TAP goes to test-results/<kind>.tap; the last line printed is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(unit integration system e2e)

mkdir -p test-results
rm -f test-results/*.tap

fail=0
echo "== lint (biome) and type-check (tsc)"
npx biome check . || fail=1
npx tsc --noEmit -p tsconfig.json || fail=1
npx tsc --noEmit -p web/tsconfig.json || fail=1
echo "== build"
npx tsc -p tsconfig.build.json || fail=1
npx vite build --config web/vite.config.ts --logLevel warn || fail=1
if [ "$fail" -ne 0 ]; then
  echo "lint, type-check or build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

for kind in "${kinds[@]}"; do
  [ -d "test/$kind" ] || continue
  mapfile -t files < <(find "test/$kind" -name '*.test.ts' | sort)
  [ ${#files[@]} -eq 0 ] && continue
  echo "== $kind tests (${#files[@]} files)"
  # unit tests are pure and run in parallel; the rest start daemons and sockets and run one file at a time
  conc=2
  [ "$kind" != unit ] && conc=1
  node --import tsx --test --test-timeout=120000 --test-concurrency="$conc" \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="test-results/$kind.tap" \
    "${files[@]}" || fail=1
done

pass=$(cat test-results/*.tap 2>/dev/null | awk '/^# pass /{s+=$3} END{print s+0}')
failed=$(cat test-results/*.tap 2>/dev/null | awk '/^# fail /{s+=$3} END{print s+0}')
if [ "$pass" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "no test ran"
  fail=1
fi
[ "$failed" -gt 0 ] && fail=1
echo "$pass passed, $failed failed"
exit "$fail"
