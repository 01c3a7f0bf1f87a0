#!/usr/bin/env bash
# Creates (or refreshes) the project's Python 3.12 virtual environment from nothing.
# Sourced by bin/verify-ate and bin/run-tests; idempotent: a stamp of pyproject.toml and the
# requested extras skips the install when nothing changed.
#   VERIFY_ATE_VENV   where the environment lives (default: <repo>/.venv)
#   VERIFY_ATE_PYTHON a Python 3.12 interpreter to use (default: found on this machine)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VERIFY_ATE_VENV:-$repo_root/.venv}"
extras="${1:-pi0}"

find_python312() {
    local candidate
    for candidate in "${VERIFY_ATE_PYTHON:-}" python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12 \
        "$HOME"/.pyenv/versions/3.12*/bin/python3.12 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

pyproject_hash() {
    sha256sum "$repo_root/pyproject.toml" | cut -d' ' -f1
}

# The stamp holds the pyproject hash and the extras installed with it. A request for extras that
# are already there costs nothing; otherwise the union is installed, so the demo command and the
# test command do not keep reinstalling over each other.
stamp_file="$venv/.verify-ate-stamp"
installed_extras=""
if [ -x "$venv/bin/python" ] && [ -f "$stamp_file" ] && [ "$(head -n 1 "$stamp_file")" = "$(pyproject_hash)" ]; then
    installed_extras="$(sed -n 2p "$stamp_file")"
fi
missing=""
for extra in ${extras//,/ }; do
    case ",$installed_extras," in *",$extra,"*) ;; *) missing="$missing $extra" ;; esac
done
if [ -z "$missing" ] && [ -n "$installed_extras" ]; then
    return 0 2>/dev/null || exit 0
fi
extras="$(echo "${installed_extras//,/ } ${extras//,/ }" | tr ' ' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"

python312="$(find_python312)" || {
    echo "bootstrap: Python 3.12 not found (lerobot 0.6 requires it). Install python3.12 or set VERIFY_ATE_PYTHON=/path/to/python3.12" >&2
    exit 3
}
echo "bootstrap: preparing $venv with $python312 (extras: $extras); a first install downloads torch and lerobot, several GB" >&2
"$python312" -m venv "$venv"
# pip and the build backend are chatty (registry notices, setuptools banners): keep their output in
# a log, and show its end only when the install fails.
log="$venv/.verify-ate-install.log"
if ! { "$venv/bin/python" -m pip install --upgrade pip && "$venv/bin/python" -m pip install -e "$repo_root[$extras]"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "bootstrap: installing into $venv failed (whole log: $log)" >&2
    exit 3
fi
printf '%s\n%s\n' "$(pyproject_hash)" "$extras" >"$stamp_file"
