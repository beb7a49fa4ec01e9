#!/usr/bin/env bash
# Fetches and unpacks Debian's source package of CivetWeb for this Debian
# release, without touching the system's apt sources: apt runs with a private
# sources.list, list directory and cache under OUTDIR/apt.
#
# usage: scripts/civetweb.sh OUTDIR
#
# Result: OUTDIR/src/src/civetweb.c and OUTDIR/src/include/civetweb.h (with
# Debian's patches applied). Does nothing when they already exist.
# Needs: apt, dpkg-dev (dpkg-source), debian-archive-keyring.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

mkdir -p "$1"
outdir=$(cd "$1" && pwd)
src="$outdir/src"

# One run at a time per OUTDIR (two makes at once would share apt's lists).
exec 9>"$outdir/.lock"
flock 9

if [ -f "$src/src/civetweb.c" ] && [ -f "$src/include/civetweb.h" ]; then
    echo "civetweb: source already in $src" >&2
    exit 0
fi

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [ ! -r "$keyring" ]; then
    echo "civetweb: $keyring missing (package debian-archive-keyring)" >&2
    exit 1
fi
for tool in apt-get dpkg-source; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "civetweb: $tool not found (run scripts/deps.sh)" >&2
        exit 1
    fi
done

# The suite of the running system, e.g. "bookworm".
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ -z "$suite" ]; then
    echo "civetweb: no VERSION_CODENAME in /etc/os-release" >&2
    exit 1
fi
mirror=${CIVETWEB_MIRROR:-http://deb.debian.org/debian}

# Private apt state: only our deb-src line, no system sources.list.d.
apt_dir="$outdir/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" \
    "$apt_dir/sources.list.d"
echo "deb-src [signed-by=$keyring] $mirror $suite main" >"$apt_dir/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Acquire::Languages=none"
    -o "APT::Sandbox::User=$(id -un)"
)

echo "civetweb: fetching the source package from $suite" >&2
apt-get -q "${apt_opts[@]}" update >&2

# apt-get source downloads into the current directory.
dl="$outdir/download"
mkdir -p "$dl"
(cd "$dl" && apt-get -q "${apt_opts[@]}" source --download-only civetweb) >&2

dsc=$(find "$dl" -maxdepth 1 -name 'civetweb_*.dsc' | sort -V | tail -n 1)
if [ -z "$dsc" ]; then
    echo "civetweb: no civetweb_*.dsc downloaded into $dl" >&2
    exit 1
fi

# Unpack inside the download directory (dpkg-source leaves a copy of the
# upstream tarball beside the tree), then move the tree into place in one
# step, so an interrupted run never leaves a half-unpacked OUTDIR/src behind.
# apt has already checked the files against the signed Sources index;
# dpkg-source's own "Can't check signature" note (no Debian developer keyring
# here) is expected, so its output is shown only when it fails.
rm -rf "$src" "$dl/tree"
if ! dpkg-source -x "$dsc" "$dl/tree" >"$dl/dpkg-source.log" 2>&1; then
    cat "$dl/dpkg-source.log" >&2
    echo "civetweb: dpkg-source -x $dsc failed" >&2
    exit 1
fi
mv "$dl/tree" "$src"

if [ ! -f "$src/src/civetweb.c" ] || [ ! -f "$src/include/civetweb.h" ]; then
    echo "civetweb: unpacked $dsc but civetweb.c/civetweb.h are not there" >&2
    exit 1
fi
echo "civetweb: $(basename "$dsc" .dsc) unpacked into $src" >&2
