#!/usr/bin/env bash
# Create or reuse the Python venv of one test bot and print its python's path.
#
#   scripts/bots/install.sh NAME        NAME = reference | pipecat | talk | ...
#
# The venv lives in $VOICEBOT1_BOTS_CACHE/NAME/venv (default /var/cache/voicebot1-bots)
# and is built from scripts/bots/NAME/requirements.txt. It is keyed by a hash of that
# file and of the interpreter: an unchanged file reuses the venv (well under a second),
# a changed one rebuilds it. Concurrent calls for the same NAME wait for each other
# (flock). The LAST line of stdout is the venv's python; progress goes to stderr.
#
# Works as root on a fresh Debian machine with python3: if `python3 -m venv` fails
# (no ensurepip), python3-venv is installed with apt-get.
# Environment: PYTHON (interpreter to build with, default python3),
# VOICEBOT1_BOTS_CACHE (cache root), PIP_INDEX_URL etc. as pip reads them.
set -euo pipefail

usage() { echo "usage: $0 NAME   (a folder of scripts/bots/ with a requirements.txt)" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
name=$1
[[ $name =~ ^[A-Za-z0-9_-]+$ ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
req="$here/$name/requirements.txt"
[[ -f $req ]] || { echo "install.sh: no $req" >&2; exit 2; }

cache_root=${VOICEBOT1_BOTS_CACHE:-/var/cache/voicebot1-bots}
dir="$cache_root/$name"
venv="$dir/venv"
py=${PYTHON:-python3}
log() { echo "install.sh[$name]: $*" >&2; }

if ! command -v "$py" >/dev/null 2>&1; then
    log "$py not found; installing python3 with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2; }
fi

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9

# The key: the requirements file and the interpreter that builds the venv.
py_id=$("$py" -c 'import sys; print(sys.version, sys.executable)')
key=$( { cat "$req"; echo "$py_id"; } | sha256sum | cut -d' ' -f1)

if [[ -x $venv/bin/python && -f $venv/.voicebot1-key && $(cat "$venv/.voicebot1-key") == "$key" ]] \
    && "$venv/bin/python" -c '' 2>/dev/null; then
    log "reusing $venv"
    echo "$venv/bin/python"
    exit 0
fi

log "building $venv (key ${key:0:12})"
rm -rf "$venv"
if ! "$py" -m venv "$venv" >&2; then
    rm -rf "$venv"
    log "'$py -m venv' failed; installing python3-venv with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q python3-venv >&2 || { apt-get update -q >&2 && apt-get install -y -q python3-venv >&2; }
    # Debian names the package after the minor version too (python3.11-venv).
    minor=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    "$py" -m venv "$venv" >&2 || {
        apt-get install -y -q "python$minor-venv" >&2
        rm -rf "$venv"
        "$py" -m venv "$venv" >&2
    }
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" >&2
# Written last: a build that failed half-way is rebuilt next time.
echo "$key" >"$venv/.voicebot1-key"
log "built $venv ($(du -sh "$venv" | cut -f1))"
echo "$venv/bin/python"
