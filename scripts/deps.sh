#!/usr/bin/env bash
# Installs the Debian packages that building, testing and running hookd need.
# Idempotent: one dpkg-query call when everything is already there (no
# apt-get update then). Uses sudo when not root.
#
# usage: scripts/deps.sh [EXTRA_PACKAGE...]
# (make bench adds nginx-light, the ceiling it measures hookd against).
#
# Prints one line: what it installed, or that nothing was missing.
# Note: postgresql-15 creates and starts Debian's default cluster "15/main" on
# port 5432; hookd never uses it (scripts/pg.sh makes private clusters) and
# this script leaves it alone.
set -euo pipefail

packages=(
    build-essential pkg-config dpkg-dev
    libssl-dev openssl ca-certificates curl
    libjson-c-dev libpq-dev libconfig-dev libcurl4-openssl-dev libsystemd-dev
    libcriterion-dev
    postgresql-15 postgresql-client-15
    debian-archive-keyring  # scripts/civetweb.sh verifies the sources with it
    coreutils util-linux    # od (scripts/embed.sh), runuser (scripts/pg.sh)
    systemd                 # systemd-analyze checks the unit in the tests
    tzdata                  # the autoreply handler's office-hours time zones
)
packages+=("$@")

# One query for all of them; a package dpkg has never heard of is reported on
# stderr and makes dpkg-query exit 1, so neither is an error here.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' \
    "${packages[@]}" 2>/dev/null || true)

missing=()
for p in "${packages[@]}"; do
    if ! grep -q "^${p} ii" <<<"$installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: nothing to install (${#packages[@]} packages present)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
elif command -v sudo >/dev/null 2>&1 && [ -t 0 ]; then
    as_root=(sudo)   # may ask for a password on the terminal
else
    echo "deps: missing packages: ${missing[*]}" >&2
    echo "deps: cannot install them: not root and sudo is not usable;" \
        "install them as root and run again" >&2
    exit 1
fi

echo "deps: installing: ${missing[*]}" >&2
"${as_root[@]}" apt-get update -q >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
echo "deps: installed ${missing[*]}"
