#!/usr/bin/env bash
# Autobahn TestSuite (fuzzingclient) against catalytic's `--echo-path` endpoint.
#
# usage: tests/conformance/run_autobahn.sh [PATH_TO_CATALYTIC_BINARY]
#
# Environment:
#   CATALYTIC_BIN              server binary (default: the argument, else target/debug/catalytic)
#   CATALYTIC_CONFORMANCE      full (default: cases 1-7, 9, 10) or quick (1-7, 10; skips the slow
#                              9.* limits/performance cases)
#   CATALYTIC_PYTHON27         a Python 2.7 interpreter (default: pyenv's 2.7.*, then python2.7 / python2)
#   CATALYTIC_AUTOBAHN_CACHE   where the suite's virtualenv lives
#                              (default: ${XDG_CACHE_HOME:-$HOME/.cache}/catalytic-autobahn)
#   CATALYTIC_AUTOBAHN_CASES   run only these case ids/patterns instead, e.g. "9.1.2 7.9.*"
#   CATALYTIC_AUTOBAHN_TIMEOUT bound in seconds for the wstest run (default: 900 full, 300 quick)
#   CATALYTIC_AUTOBAHN_KEEP    a directory to copy the HTML/JSON reports and logs into
#
# Exit codes: 0 every case passed (behavior OK / NON-STRICT / INFORMATIONAL and close behavior
# OK / INFORMATIONAL); 1 some case failed or the server died; 2 harness error (venv install,
# server start, wstest time-out, no report); 77 skipped because no Python 2.7 exists here.
set -euo pipefail

SKIP=77
AUTOBAHN_VERSION=25.10.1
VIRTUALENV_VERSION=20.15.1   # the last virtualenv release that runs on Python 2.7

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

say() { printf 'autobahn: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 2; }

# ---------------------------------------------------------------------------------- arguments
bin=${1:-${CATALYTIC_BIN:-target/debug/catalytic}}
if [[ "$bin" != /* ]]; then
    if [[ -x "$bin" ]]; then bin="$PWD/$bin"; else bin="$root/$bin"; fi
fi
[[ -x "$bin" ]] || die "server binary not found: $bin (build it, or pass CATALYTIC_BIN)"

mode=${CATALYTIC_CONFORMANCE:-full}
case "$mode" in
    full)  categories="1 2 3 4 5 6 7 9 10"; limit_default=900 ;;
    quick) categories="1 2 3 4 5 6 7 10"; limit_default=300 ;;
    *) die "CATALYTIC_CONFORMANCE must be full or quick, not '$mode'" ;;
esac
limit=${CATALYTIC_AUTOBAHN_TIMEOUT:-$limit_default}
if [[ -n "${CATALYTIC_AUTOBAHN_CASES:-}" ]]; then
    # A hand-picked subset, e.g. "9.1.2 7.*": no completeness check per category.
    cases=$(printf '"%s", ' $CATALYTIC_AUTOBAHN_CASES)
    mode="cases $CATALYTIC_AUTOBAHN_CASES"
    categories=""
else
    cases=$(printf '"%s.*", ' $categories)
fi
cases=${cases%, }

# ---------------------------------------------------------------------------------- Python 2.7
is_py27() { [[ -n "$1" ]] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; }

python27=""
candidates=()
[[ -n "${CATALYTIC_PYTHON27:-}" ]] && candidates+=("$CATALYTIC_PYTHON27")
for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7; do
    [[ -e "$p" ]] && candidates+=("$p")
done
for n in python2.7 python2; do
    p=$(command -v "$n" 2>/dev/null || true)
    [[ -n "$p" ]] && candidates+=("$p")
done
for p in "${candidates[@]+"${candidates[@]}"}"; do
    if is_py27 "$p"; then python27=$p; break; fi
done
if [[ -z "$python27" ]]; then
    {
        echo "################################################################################"
        echo "## AUTOBAHN SKIPPED: no Python 2.7 (set CATALYTIC_PYTHON27, or install 2.7 under"
        echo "## pyenv). The WebSocket conformance suite did NOT run; nothing was verified."
        echo "################################################################################"
    } >&2
    exit $SKIP
fi

# ---------------------------------------------------------------------------------- the suite's venv
cache=${CATALYTIC_AUTOBAHN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalytic-autobahn}
venv="$cache/venv-$AUTOBAHN_VERSION"
ready="$venv/.catalytic-ready"
mkdir -p "$cache"

install_suite() {
    say "creating the Autobahn virtualenv in $venv (one time, about 2 minutes)"
    rm -rf "$venv" "$cache/bootstrap"
    "$python27" -m pip install --disable-pip-version-check --no-warn-script-location -q \
        --target "$cache/bootstrap" "virtualenv==$VIRTUALENV_VERSION" >"$cache/install.log" 2>&1 \
        || { tail -n 30 "$cache/install.log" >&2; die "could not install virtualenv==$VIRTUALENV_VERSION"; }
    PYTHONPATH="$cache/bootstrap" "$python27" -m virtualenv -q -p "$python27" "$venv" >>"$cache/install.log" 2>&1 \
        || { tail -n 30 "$cache/install.log" >&2; die "could not create the virtualenv"; }
    "$venv/bin/python" -m pip install --disable-pip-version-check -q \
        "autobahntestsuite==$AUTOBAHN_VERSION" >>"$cache/install.log" 2>&1 \
        || { tail -n 30 "$cache/install.log" >&2; die "could not install autobahntestsuite==$AUTOBAHN_VERSION"; }
    [[ -x "$venv/bin/wstest" ]] || die "wstest missing after install"
    echo "autobahntestsuite==$AUTOBAHN_VERSION" >"$ready"
}

(
    # Two runs at once must not build the same venv; flock is in util-linux (skip it if absent).
    if command -v flock >/dev/null 2>&1; then flock -w 600 9 || die "timed out waiting for $cache/lock"; fi
    if [[ -f "$ready" && -x "$venv/bin/wstest" ]] && is_py27 "$venv/bin/python"; then
        exit 0
    fi
    install_suite
) 9>"$cache/lock"

# ---------------------------------------------------------------------------------- the server
tmp=$(mktemp -d "${TMPDIR:-/tmp}/catalytic-autobahn.XXXXXX")
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "${CATALYTIC_AUTOBAHN_KEEP:-}" ]]; then
        mkdir -p "$CATALYTIC_AUTOBAHN_KEEP"
        cp -r "$tmp"/. "$CATALYTIC_AUTOBAHN_KEEP"/ 2>/dev/null || true
        say "reports kept in $CATALYTIC_AUTOBAHN_KEEP"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" serve --listen 127.0.0.1:0 --db "$tmp/autobahn.db" --echo-path /echo \
    >"$tmp/server.log" 2>&1 </dev/null &
server_pid=$!

addr=""
for _ in $(seq 300); do   # 30 s
    addr=$(sed -n 's/.*listening on http:\/\/\([0-9.]*:[0-9]*\).*/\1/p' "$tmp/server.log" | head -n 1)
    [[ -n "$addr" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log" >&2; die "the server exited at start"; }
    sleep 0.1
done
[[ -n "$addr" ]] || { tail -n 20 "$tmp/server.log" >&2; die "no 'listening on' line from the server within 30 s"; }

# ---------------------------------------------------------------------------------- the run
cat >"$tmp/spec.json" <<EOF
{
  "outdir": "$tmp/reports",
  "servers": [{"agent": "catalytic", "url": "ws://$addr/echo"}],
  "cases": [$cases],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF

say "running the $mode case set against ws://$addr/echo (bound ${limit}s)"
start=$(date +%s)
set +e
(cd "$tmp" && timeout -k 10 "$limit" "$venv/bin/wstest" -m fuzzingclient -s "$tmp/spec.json") \
    >"$tmp/wstest.log" 2>&1
wstest_rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
say "wstest finished in ${elapsed}s (exit $wstest_rc)"

server_exit=""
if ! kill -0 "$server_pid" 2>/dev/null; then
    set +e; wait "$server_pid"; server_exit=$?; set -e
fi
if [[ $wstest_rc -eq 124 || $wstest_rc -eq 137 ]]; then
    tail -n 20 "$tmp/wstest.log" >&2
    die "wstest did not finish within ${limit}s (raise CATALYTIC_AUTOBAHN_TIMEOUT, or use a release build)"
fi
if [[ ! -s "$tmp/reports/index.json" ]]; then
    tail -n 40 "$tmp/wstest.log" >&2
    die "wstest wrote no report (exit $wstest_rc)"
fi

set +e
"$venv/bin/python" "$here/autobahn_report.py" "$tmp/reports/index.json" $categories
report_rc=$?
set -e
echo "mode: $mode; wstest wall time: ${elapsed}s; binary: $(basename "$bin")"

status=0
if [[ -n "$server_exit" ]]; then
    # 0 after a "signal received" line: something outside this script sent SIGINT/SIGTERM.
    say "THE SERVER EXITED during the run (status $server_exit); last log lines:"
    tail -n 30 "$tmp/server.log" >&2
    status=1
elif grep -q 'panicked' "$tmp/server.log"; then
    say "THE SERVER PANICKED during the run:"
    grep -A 10 'panicked' "$tmp/server.log" | head -n 30 >&2
    status=1
fi
[[ $report_rc -eq 0 ]] || status=$(( report_rc == 1 ? 1 : 2 ))
[[ $status -eq 0 ]] && say "PASSED" || say "FAILED (exit $status)"
exit $status
