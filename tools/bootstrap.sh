#!/bin/sh
# Installs the Debian packages that building, the demo and the tests need,
# when any is missing.  Runs apt-get through sudo unless already root.
set -eu

PACKAGES="gcc make pkg-config openssl lua5.4 liblua5.4-dev libssl-dev
libcurl4-openssl-dev libcjson-dev lua-busted lua-cqueues luarocks valgrind
python3-cryptography lua-luaossl lua-argparse lua-dkjson lua-filesystem
lua-term clang libclang-rt-14-dev nginx libnginx-mod-http-lua lua-resty-core
libluajit2-5.1-dev"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $pkg" ;;
    esac
done

[ -z "$missing" ] && exit 0

echo "bootstrap: installing$missing"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "bootstrap: missing packages:$missing; install them as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null

# Debian's nginx package starts a server on port 80 of every address as it
# installs.  The OpenResty spec starts its own nginx on loopback only, so
# stop that service and keep it from starting at boot.
case " $missing " in
    *" nginx "*)
        if [ -d /run/systemd/system ]; then
            $SUDO systemctl stop nginx || true
            $SUDO systemctl disable nginx || true
        else
            $SUDO service nginx stop >/dev/null 2>&1 || true
            $SUDO update-rc.d nginx disable >/dev/null 2>&1 || true
        fi
        ;;
esac
