#!/bin/sh
# Runs every benchmark (make bench) and writes bench/RESULTS.md and
# bench/cpu_per_call.png.  Installs what the benchmarks need when it is
# missing: the project's build packages (tools/bootstrap.sh), wrk,
# gnuplot-nox, Node.js and npm from Debian, the public SDK from the npm
# registry into bench/node/ (npm ci, lock file in bench/sdk/), and for the
# OpenResty benchmark nginx, libnginx-mod-http-lua and LuaJIT's headers.
#
#   sh bench/run.sh [--quick]
set -eu

cd "$(dirname "$0")/.."

sh tools/bootstrap.sh

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v gnuplot >/dev/null 2>&1 || missing="$missing gnuplot-nox"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -e lua/resty/wechatpay.lua ]; then
    for pkg in nginx libnginx-mod-http-lua libluajit2-5.1-dev; do
        installed "$pkg" || missing="$missing $pkg"
    done
fi

if [ -n "$missing" ]; then
    echo "bench: installing$missing"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "bench: missing packages:$missing; install them as root" >&2
        exit 1
    fi
    # Debian's nginx package starts a server on port 80 when installed;
    # a policy-rc.d that denies every start prevents that.  It is removed
    # again unless one was there before.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    status=0
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || status=$?
    [ -n "$policy" ] && $SUDO rm -f "$policy"
    [ "$status" -eq 0 ] || exit "$status"
fi

make --no-print-directory all
if [ -e lua/resty/wechatpay.lua ]; then
    make --no-print-directory luajit
fi

# The public SDK, at the versions the lock file names.  --ignore-scripts:
# none of these packages needs an install script.
mkdir -p bench/node
if ! cmp -s bench/sdk/package-lock.json bench/node/package-lock.json \
    || [ ! -d bench/node/node_modules/wechatpay-axios-plugin ]; then
    cp bench/sdk/package.json bench/sdk/package-lock.json bench/node/
    (cd bench/node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

export LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;"
export LUA_CPATH="build/?.so;;"
lua5.4 bench/run.lua "$@"
lua5.4 bench/report.lua
