#!/usr/bin/env bash
# Install the system packages a make target needs (Debian or Ubuntu), or say in one line how.
#
#   scripts/setup.sh run    Python 3.11+ with venv (make run, make lint)
#   scripts/setup.sh demo   the above and the sqlite3 command (make try, make demo)
#   scripts/setup.sh test   everything the whole test suite runs (make test, CI)
#
# Nothing missing: silent, exit 0. Missing and root (or passwordless sudo) with apt-get: installs
# them. Otherwise: one line naming the command to run, exit 1, before anything else runs.
set -euo pipefail

profile="${1:-test}"
missing=()
need() { missing+=("$@"); }
have() { command -v "$1" >/dev/null 2>&1; }

python_ok() {
    have python3 && python3 - <<'PY' >/dev/null 2>&1
import sys, ensurepip, venv  # noqa: F401  (Debian splits ensurepip into python3-venv)
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
}

python_ok || need python3 python3-venv
if [[ "$profile" == demo || "$profile" == test ]]; then
    have sqlite3 || need sqlite3
fi
if [[ "$profile" == test ]]; then
    # initdb and pg_ctl for the throwaway cluster of tests/support/pg.py (Debian keeps them in
    # /usr/lib/postgresql/<version>/bin); not needed when FORWARDER_TEST_POSTGRES_URL names one.
    if [[ -z "${FORWARDER_TEST_POSTGRES_URL:-}" ]] \
        && ! { have initdb && have pg_ctl; } \
        && ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
        need postgresql
    fi
    have psql || need postgresql-client
    # promtool and the Prometheus server: the dashboard, alert-rule and scrape tests.
    { have promtool && have prometheus; } || need prometheus
    # systemd-analyze: the unit file's verify and exposure tests.
    have systemd-analyze || need systemd
    # The insert examples' runtimes and drivers: PHP's PDO drivers; Node with a C++ toolchain
    # (better-sqlite3 builds from source); Go with Debian's copies of its drivers (built in
    # GOPATH mode: no Go module proxy is needed).
    have php || need php-cli
    if have php; then
        php -r 'exit(extension_loaded("pdo_sqlite") ? 0 : 1);' >/dev/null 2>&1 || need php-sqlite3
        php -r 'exit(extension_loaded("pdo_pgsql") ? 0 : 1);' >/dev/null 2>&1 || need php-pgsql
    else
        need php-sqlite3 php-pgsql
    fi
    have node || need nodejs
    have npm || need npm
    { have g++ && have make; } || need g++ make
    have go || need golang-go
    [[ -d /usr/share/gocode/src/github.com/mattn/go-sqlite3 ]] \
        || need golang-github-mattn-go-sqlite3-dev
    [[ -d /usr/share/gocode/src/github.com/lib/pq ]] || need golang-github-lib-pq-dev
fi

((${#missing[@]})) || exit 0

# No recommends: nothing to start as a service (Prometheus, node-exporter) on this host.
install=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
if have apt-get && [[ "$(id -u)" == 0 ]]; then
    sudo=()
elif have apt-get && have sudo && sudo -n true 2>/dev/null; then
    sudo=(sudo)
else
    how="sudo apt-get update && sudo ${install[*]}"
    have apt-get || how="install with your package manager: ${missing[*]} (Debian names)"
    echo "forwarder: make $profile needs system packages that are missing; run: $how" >&2
    exit 1
fi
echo "forwarder: installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" "${install[@]}" >/dev/null
