#!/bin/sh
# The long schemathesis run: tests/test_fuzz_http.py with many more examples.
#   scripts/fuzz_http.sh [EXAMPLES [MAX_SECONDS]]    (defaults: 2000 examples, 600 s)
# FUZZ_SEED=<seed> replays a run; the report (and seed) is printed when it fails.
set -eu
cd "$(dirname "$0")/.."
export FUZZ_EXAMPLES="${1:-2000}" FUZZ_MAX_TIME="${2:-600}"
exec .venv/bin/python -m pytest tests/test_fuzz_http.py -q -p no:cacheprovider \
  --timeout "$((FUZZ_MAX_TIME + 600))"
