#!/usr/bin/env bash
# leakcheck.sh -- what is left in Asterisk: lists channels and bridges over
# ARI and exits non-zero when anything is left.
#
#   scripts/leakcheck.sh                    everything counts
#   scripts/leakcheck.sh --prefix voicebot1-  only ids starting with the prefix
#   scripts/leakcheck.sh --quiet            only the summary line
#
# Output ends with: leaked_channels=N leaked_bridges=N
# Exit: 0 nothing left, 1 something left, 2 ARI unreachable / bad usage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

prefix="" quiet=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --quiet|-q) quiet=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done

command -v jq >/dev/null || { echo "error: jq is not installed" >&2; exit 2; }
chans_json="$(ari GET /channels 2>/dev/null)" || { echo "error: cannot list channels from $VB1_ARI_URL (is the sandbox up?)" >&2; exit 2; }
bridges_json="$(ari GET /bridges 2>/dev/null)" || { echo "error: cannot list bridges from $VB1_ARI_URL" >&2; exit 2; }

# Filter by id prefix in jq (startswith on "" keeps everything).
chans="$(jq -c --arg p "$prefix" '[.[] | select(.id | startswith($p))]' <<<"$chans_json")"
bridges="$(jq -c --arg p "$prefix" '[.[] | select(.id | startswith($p))]' <<<"$bridges_json")"
nc="$(jq length <<<"$chans")"
nb="$(jq length <<<"$bridges")"

if [ "$quiet" = 0 ]; then
    echo "channels left: $nc${prefix:+ (id prefix '$prefix')}"
    jq -r '.[] | "  channel id=\(.id) name=\(.name) state=\(.state) app=\(.dialplan.app_name // "") created=\(.creationtime)"' <<<"$chans"
    echo "bridges left: $nb${prefix:+ (id prefix '$prefix')}"
    jq -r '.[] | "  bridge id=\(.id) name=\(.name // "") type=\(.bridge_type) class=\(.bridge_class // "") creator=\(.creator // "") channels=\(.channels | length)"' <<<"$bridges"
fi
echo "leaked_channels=$nc leaked_bridges=$nb"
[ "$nc" -eq 0 ] && [ "$nb" -eq 0 ]
