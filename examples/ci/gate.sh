#!/usr/bin/env bash
# Cross-device accuracy gate for any CI: compare two trajectory artifacts, keep the report, and
# let the exit code say what happened.
#
#   examples/ci/gate.sh REF.npz DUT.npz [OUT_DIR] [more verify-ate compare flags...]
#   e.g. examples/ci/gate.sh ref.npz dut.npz runs/ci --pos-tol 0.02 --stat p95
#
# It runs `verify-ate` from PATH (after the README's set-up, `source .venv/bin/activate` put it
# there), or the one VERIFY_ATE names: VERIFY_ATE=/path/to/.venv/bin/verify-ate examples/ci/gate.sh ...
#
# Exit codes (verify-ate's own, passed through unchanged):
#   0 pass | 1 gate failed (ATE over a bound or non-finite output) | 2 bad usage/config/input file
#   3 device or runtime unavailable
# Only 1 is an accuracy verdict; 2 and 3 mean "fix the job", not "the device is wrong".
set -u

if [ "$#" -lt 2 ]; then
  echo "usage: $0 REF.npz DUT.npz [OUT_DIR] [verify-ate compare flags...]" >&2
  exit 2
fi
ref=$1
dut=$2
out=${3:-runs/gate}
shift $(( $# < 3 ? $# : 3 ))

verify_ate=${VERIFY_ATE:-verify-ate}
if ! command -v "$verify_ate" >/dev/null 2>&1; then
  if [ -n "${VERIFY_ATE:-}" ]; then
    echo "verify-ate gate: VERIFY_ATE=$VERIFY_ATE is not a command (no verdict)" >&2
  else
    echo "verify-ate gate: verify-ate is not on PATH; run 'source .venv/bin/activate' in the verify-ate checkout (./bin/verify-ate creates .venv), or set VERIFY_ATE=/path/to/.venv/bin/verify-ate (no verdict)" >&2
  fi
  exit 3
fi

"$verify_ate" compare "$ref" "$dut" --out "$out" --junit "$out/junit.xml" "$@"
status=$?

case "$status" in
  0) echo "verify-ate gate: PASS (report: $out/index.html)" ;;
  1) echo "verify-ate gate: FAILED, the device under test moves the arm differently (report: $out/index.html)" >&2 ;;
  2) echo "verify-ate gate: bad input, check the artifact paths, flags and configs (no verdict)" >&2 ;;
  3) echo "verify-ate gate: device or runtime unavailable (no verdict)" >&2 ;;
  *) echo "verify-ate gate: ended unexpectedly with status $status (no verdict)" >&2 ;;
esac
exit "$status"
