#!/usr/bin/env bash
# Creates (or refreshes) the project's Python 3.12 virtual environment from nothing.
# Sourced by bin/verify-ate and bin/run-tests; idempotent: a stamp of pyproject.toml and the
# requested extras skips the install when nothing changed, and then it prints nothing.
#   VERIFY_ATE_VENV      where the environment lives (default: <repo>/.venv)
#   VERIFY_ATE_PYTHON    a Python 3.12 interpreter to use (default: found on this machine)
#   VERIFY_ATE_INSTALLER uv or pip (default: uv, unless pip is configured, see below)
#   VERIFY_ATE_HEARTBEAT seconds between progress lines in a log (default: 15)
# A first install says on stderr what it is doing and for how long: a line per stage, the path of
# its log, a heartbeat during the long install (every 15 s in a log, one redrawn line on a
# terminal), and at the end how to call the tool. A failed install shows the log's tail, exits 3.
#
# Why uv. A fresh clone's `time ./bin/verify-ate --demo` (install, then the first demo), measured
# 2026-12-02 on a 2-core machine with PyPI behind a fast mirror (~500 MB/s), lerobot 0.6.1 and
# torch 2.11 (103 packages):
#   pip (pip's own cache stays empty there): 1:39, of which the install 1:31; venv 5.7 GB
#   uv 0.13.9, cold uv cache: 0:36 (install 0:18), this script 1:12; venv 5.4 GB + 5.5 GB cache
#   uv 0.13.9, warm uv cache: 0:19 (install 0:04), this script 0:27 (install 0:07); venv 5.4 GB,
#   hard links into uv's cache, so no extra disk
# pip's time goes to unpacking 5.7 GB, which uv's cache makes a matter of links. (uv compiles no
# bytecode at install: the first demo then takes ~15 s instead of ~8 s.) uv comes from
# `pip install uv` into the new environment (one wheel, ~2 s); if that or the install with uv
# fails, pip installs instead. uv reads none of pip's configuration, so where pip is told to use
# another index, a wheel folder, constraints, certificates or a proxy, pip installs, saying so:
# uv would otherwise fetch something else from PyPI without a word, or fail behind the proxy.
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

# ---- a first install from here on: everything it says goes to stderr --------------------------

bootstrap_t0=$SECONDS
log="$venv/.verify-ate-install.log"
heartbeat_pid=""
# On a terminal the heartbeat redraws one line; in a CI log every redraw would be a new line, so
# there it prints one every 15 s.
if [ -t 2 ]; then bootstrap_tty=1; else bootstrap_tty=""; fi

elapsed() {
    local s=$((SECONDS - bootstrap_t0))
    printf '%d:%02d' $((s / 60)) $((s % 60))
}

stage() {
    echo "bootstrap [$(elapsed)] $*" >&2
}

# What the installer is doing now, from the last line of the log that says so (pip's "Collecting",
# "Downloading", ...; uv's "Downloading torch (530.7MiB)", "Prepared", ...), shortened to fit one
# line: platform tags, "(from ...)" provenance and pip's list of a hundred package names say
# nothing a person waiting needs.
install_activity() {
    local line
    line="$(grep -E '^ *(Collecting|Downloading|Downloaded|Using cached|Processing|Obtaining|Building|Built|Installing|Installed|Successfully|Resolved|Prepared)' "$log" 2>/dev/null | tail -n 1)" || true
    case "$line" in
        "Installing collected packages:"*)
            local count
            count="$(echo "${line#*:}" | tr ',' '\n' | grep -c .)" || true
            line="unpacking $count downloaded packages into the environment"
            ;;
        "Downloading "* | " Downloaded "*)
            # uv downloads the large wheels in parallel and names each when it starts and ends.
            local started finished
            started="$(grep -c '^Downloading ' "$log")" || true
            finished="$(grep -c '^ Downloaded ' "$log")" || true
            line="$finished of $started large wheels downloaded; latest: ${line# }"
            ;;
        "")
            line="starting"
            ;;
    esac
    line="$(echo "$line" | sed -E 's/^ +//; s/ \(from [^)]*\)//; s/-(cp|py)[0-9][^ ]*\.whl/.whl/')"
    echo "${line:0:90}"
}

# Runs in the background during the install. The size of the environment is the one measure of
# progress that keeps moving while pip unpacks torch and the CUDA libraries (minutes of no log).
heartbeat() {
    local sleeper=""
    # A killed sleep would linger as an orphan until its time is up: end it with the loop.
    trap '[ -z "$sleeper" ] || { kill "$sleeper" && wait "$sleeper"; } 2>/dev/null; exit 0' TERM
    local interval="${VERIFY_ATE_HEARTBEAT:-15}"
    [ -z "$bootstrap_tty" ] || interval=1
    local last_size_at=-1000 size="" message columns
    while :; do
        sleep "$interval" &
        sleeper=$!
        wait "$sleeper" || true
        sleeper=""
        if [ -z "$bootstrap_tty" ] || [ $((SECONDS - last_size_at)) -ge 10 ]; then
            size="$(du -sm "$venv" 2>/dev/null | cut -f1)" || size=""
            last_size_at=$SECONDS
        fi
        message="bootstrap [$(elapsed)] ... $(install_activity)${size:+ (environment: $size MB)}"
        if [ -n "$bootstrap_tty" ]; then
            # A line longer than the terminal wraps, and the next redraw would only clear its last row.
            columns="$(stty size 0<&2 2>/dev/null | cut -d' ' -f2)" || columns=""
            printf '\r\033[K%s' "${message:0:${columns:-80}-1}" >&2
        else
            echo "$message" >&2
        fi
    done
}

stop_heartbeat() {
    if [ -n "$heartbeat_pid" ]; then
        kill "$heartbeat_pid" 2>/dev/null || true
        wait "$heartbeat_pid" 2>/dev/null || true
        heartbeat_pid=""
        [ -z "$bootstrap_tty" ] || printf '\r\033[K' >&2
    fi
}

# The long step: its output goes to the log, with the heartbeat running beside it.
run_logged() {
    local status=0
    heartbeat &
    heartbeat_pid=$!
    "$@" >>"$log" 2>&1 || status=$?
    stop_heartbeat
    return "$status"
}

# The pip settings uv would not honour (see the top of this file), as a list for a message.
pip_settings() {
    { "$venv/bin/python" -m pip config list 2>/dev/null || true; } |
        sed -nE 's/^[^=]*\.(index-url|extra-index-url|find-links|no-index|constraint|cert|client-cert|trusted-host|proxy)=.*/\1/p' |
        sort -u | paste -sd, -
}

install_with_uv() {
    stage "getting uv (pip install uv)"
    if ! "$venv/bin/python" -m pip install uv >>"$log" 2>&1; then
        stage "uv could not be installed (see the log); installing with pip instead"
        return 1
    fi
    stage "installing verify-ate[$extras] and its dependencies with uv, several GB on a first install (log: $log)"
    if ! run_logged "$venv/bin/uv" pip install --python "$venv/bin/python" -e "${repo_root}[$extras]"; then
        stage "uv failed (see the log); installing with pip instead"
        return 1
    fi
}

install_with_pip() {
    stage "upgrading pip"
    "$venv/bin/python" -m pip install --upgrade pip >>"$log" 2>&1 || return
    stage "installing verify-ate[$extras] and its dependencies with pip, several GB on a first install (log: $log)"
    run_logged "$venv/bin/python" -m pip install -e "${repo_root}[$extras]"
}

# This file is sourced: the caller's own traps come back once the install is over.
caller_traps="$(trap -p EXIT INT TERM)"
trap stop_heartbeat EXIT
# A background job of a script ignores SIGINT, so Ctrl-C reaches the installer (which stops) and
# this shell, never the heartbeat: the trap ends it. No stamp is written, so the next run installs
# again.
trap 'stop_heartbeat; echo "bootstrap: interrupted; $venv is incomplete and is installed again next time" >&2; exit 130' INT
trap 'stop_heartbeat; exit 143' TERM

installer="${VERIFY_ATE_INSTALLER:-}"
case "$installer" in
    "" | uv | pip) ;;
    *)
        echo "bootstrap: VERIFY_ATE_INSTALLER must be uv or pip, not '$installer'" >&2
        exit 2
        ;;
esac

stage "finding Python 3.12"
python312="$(find_python312)" || {
    echo "bootstrap: Python 3.12 not found (lerobot 0.6 requires it). Install python3.12 or set VERIFY_ATE_PYTHON=/path/to/python3.12" >&2
    exit 3
}
stage "creating the virtual environment $venv with $python312 (extras: $extras)"
"$python312" -m venv "$venv"
# pip, uv and the build backend are chatty (registry notices, setuptools banners): their output
# goes to the log, named as the install starts so that it can be followed (tail -f) or inspected.
: >"$log"
if [ -z "$installer" ]; then
    installer=uv
    pip_configured="$(pip_settings)"
    if [ -n "$pip_configured" ]; then
        installer=pip
        stage "installing with pip: pip is configured here ($pip_configured), uv would not read that (VERIFY_ATE_INSTALLER=uv to use it anyway)"
    fi
fi
install_status=0
if [ "$installer" = uv ]; then
    install_with_uv || install_with_pip || install_status=$?
else
    install_with_pip || install_status=$?
fi
if [ "$install_status" -ne 0 ]; then
    echo "bootstrap: ---- last 40 lines of $log ----" >&2
    tail -n 40 "$log" >&2
    echo "bootstrap [$(elapsed)] installing into $venv failed (whole log: $log)" >&2
    exit 3
fi
# gym-pusht (PushT, the physics environment the rollout tests drive through lerobot.envs) asks for opencv-python,
# whose cv2/ would overwrite the opencv-python-headless lerobot installs: it comes without its dependencies, which
# the test extra lists (pygame, pymunk, shapely; gymnasium and OpenCV come with lerobot).
case ",$extras," in
    *",test,"*)
        stage "installing gym-pusht without its opencv-python"
        if ! "$venv/bin/python" -m pip install --no-deps "gym-pusht>=0.1.5,<0.2" >>"$log" 2>&1; then
            echo "bootstrap: ---- last 20 lines of $log ----" >&2
            tail -n 20 "$log" >&2
            echo "bootstrap [$(elapsed)] installing gym-pusht into $venv failed (whole log: $log)" >&2
            exit 3
        fi
        ;;
esac
stage "writing the stamp $stamp_file"
printf '%s\n%s\n' "$(pyproject_hash)" "$extras" >"$stamp_file"
stage "ready in $(elapsed). Call $venv/bin/verify-ate, or run 'source $venv/bin/activate' to have verify-ate on PATH"

trap - EXIT INT TERM
eval "$caller_traps"
