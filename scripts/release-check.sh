#!/usr/bin/env bash
# release-check.sh -- does the release run on the old boxes it is for?
# (scripts/test.sh stage "release: glibc 2.17 binary, .deb and .rpm, run in Debian 11")
#
#   scripts/release-check.sh [--dist DIR]
#     --dist DIR   check the release already in DIR instead of running scripts/release.sh
#
# Steps (each one timed; the first failure stops the run with an "error:" line):
#   1. build       scripts/release.sh -> dist/
#   2. binary      highest GLIBC_ symbol version <= 2.17, NEEDED only glibc's own
#                  libraries (and libgcc_s), stripped, <= 5 MB; the same binary in
#                  the tarball, the .deb and the .rpm; SHA256SUMS holds
#   3. root        a Debian 11 root (debootstrap --variant=minbase bullseye), cached in
#                  $VB1_STATE_DIR/bullseye-plain, copied afresh for this run
#   4. tarball     its voicebot1 --version and --check in that root (glibc 2.31)
#   5. deb         dpkg -i, dpkg -L, the unit, the voicebot1 user, --check as that user
#                  (and refused to another), reinstall keeps an edited conffile, purge
#   6. rpm         rpm -qlp, --requires, --scripts: nothing rpm 4.11 (CentOS 7) lacks;
#                  rpm --root install and erase in the same root (--nodeps: its rpm
#                  database knows no glibc)
# Nothing is mounted in the roots (none of the steps needs /proc); any mount found
# there is undone before a root is copied or deleted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

GLIBC_MAX=2.17
MAX_BYTES=5000000
# glibc's own libraries (libm, libpthread, libdl, librt, the loader) and libgcc_s.
ALLOWED_NEEDED="libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 ld-linux-x86-64.so.2 libgcc_s.so.1"
SUITE=bullseye
CACHE="$VB1_STATE_DIR/bullseye-plain"
CACHE_MARKER="$CACHE.complete"
CACHE_MARKER_CONTENT="suite=$SUITE variant=minbase packages="

dist=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dist) dist="${2:?--dist needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
require_root

declare -a timings=()
step() {  # step NAME FUNCTION: run one step, time it
    local name="$1" t0=$SECONDS
    shift
    echo
    echo "--- $name ---"
    "$@"
    timings+=("$(printf '%-8s %4d s' "$name" $((SECONDS - t0)))")
}

work="$(mktemp -d /tmp/vb1-release-check.XXXXXX)"
root=""
cleanup() {
    local rc=$?
    if [ -n "$root" ]; then safe_rm_tree "$root" || echo "error: could not remove $root" >&2; fi
    rm -rf "$work"
    if [ ${#timings[@]} -gt 0 ]; then
        echo
        echo "--- time per step ---"
        printf '%s\n' "${timings[@]}"
    fi
    if [ "$rc" -eq 0 ]; then echo "release check: ok"; else echo "release check: FAILED" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command inside the test root with a clean environment.
in_root() {
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C "$@"
}
in_root_as() {  # in_root_as USER:GROUP cmd...
    local spec="$1"
    shift
    chroot --userspec="$spec" "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C "$@"
}

# --- 1. build -----------------------------------------------------------------
build() {
    if [ -n "$dist" ]; then
        echo "checking the release in $dist (not rebuilt)"
    else
        dist="$VB1_REPO_DIR/dist"
        "$VB1_SCRIPTS_DIR/release.sh" --out "$dist"
    fi
    dist="$(cd "$dist" && pwd)"
    local f
    for f in "$REL_TARBALL" "$REL_DEB" "$REL_RPM" SHA256SUMS; do
        [ -f "$dist/$f" ] || die "$dist/$f not found (scripts/release.sh makes it)"
    done
}

# --- 2. binary ----------------------------------------------------------------
# Prints what the binary needs; returns 1 (after "error:" lines) if it breaks a rule.
check_binary() {  # check_binary FILE
    local f="$1" bad=0 dynsyms glibc needed lib size
    # Outputs are captured before grep reads them: "cmd | grep -q" fails under
    # pipefail when grep stops reading early.
    dynsyms="$(objdump -T "$f")" || { echo "error: objdump -T $f failed" >&2; return 1; }
    glibc="$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$dynsyms" | sed 's/^GLIBC_//' | sort -uV | tail -n1)"
    if [ -z "$glibc" ]; then
        echo "error: $f: objdump -T shows no GLIBC_ symbol version (not a dynamically linked glibc binary?)" >&2
        return 1
    fi
    echo "highest GLIBC_ symbol version needed: GLIBC_$glibc (limit GLIBC_$GLIBC_MAX)"
    if [ "$(printf '%s\n' "$GLIBC_MAX" "$glibc" | sort -V | tail -n1)" != "$GLIBC_MAX" ]; then
        echo "error: $f needs GLIBC_$glibc, newer than $GLIBC_MAX: it will not start on CentOS 7" >&2
        bad=1
    fi
    if grep -q 'GLIBC_PRIVATE' <<<"$dynsyms"; then
        echo "error: $f uses GLIBC_PRIVATE symbols (tied to one glibc build)" >&2
        bad=1
    fi
    needed="$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
    echo "NEEDED: $needed"
    for lib in $needed; do
        if [[ " $ALLOWED_NEEDED " != *" $lib "* ]]; then
            echo "error: $f needs $lib, which is not part of glibc (allowed: $ALLOWED_NEEDED)" >&2
            bad=1
        fi
    done
    size="$(stat -c %s "$f")"
    echo "size: $size bytes (limit $MAX_BYTES)"
    if [ "$size" -gt "$MAX_BYTES" ]; then
        echo "error: $f is $size bytes, over the $MAX_BYTES limit" >&2
        bad=1
    fi
    if grep -qE ' \.(symtab|debug_[a-z_]+) ' <<<"$(readelf -S --wide "$f")"; then
        echo "error: $f is not stripped (has .symtab or .debug_* sections)" >&2
        bad=1
    fi
    return "$bad"
}

binary() {
    local bin="$work/tar/$REL_NAME/voicebot1" sum other
    mkdir -p "$work/tar" "$work/deb" "$work/rpm"
    tar -xzf "$dist/$REL_TARBALL" -C "$work/tar" || die "cannot unpack $REL_TARBALL"
    for other in voicebot1.toml voicebot1.service INSTALL README.md asterisk/pjsip.conf asterisk/ari.conf; do
        [ -f "$work/tar/$REL_NAME/$other" ] || die "$REL_TARBALL has no $REL_NAME/$other"
    done
    [ -x "$bin" ] || die "$REL_TARBALL has no executable $REL_NAME/voicebot1"
    echo "$REL_TARBALL: $(tar -tzf "$dist/$REL_TARBALL" | grep -c -v '/$') files"
    check_binary "$bin" || die "the released binary breaks the rules above"
    # The checks must be able to fail: a binary of this Debian 12 host breaks them.
    if check_binary /usr/bin/dpkg-deb >"$work/selftest.out" 2>&1; then
        cat "$work/selftest.out" >&2
        die "check_binary accepted /usr/bin/dpkg-deb (built for glibc 2.36): the checks are broken"
    fi
    echo "(the same checks reject this host's /usr/bin/dpkg-deb: $(grep -c '^error:' "$work/selftest.out") error(s))"
    # One binary in all three packages.
    sum="$(sha256sum <"$bin" | cut -d' ' -f1)"
    dpkg-deb --fsys-tarfile "$dist/$REL_DEB" | tar -xO ./usr/bin/voicebot1 >"$work/deb/voicebot1"
    (cd "$work/rpm" && rpm2cpio "$dist/$REL_RPM" | cpio -i --quiet --to-stdout ./usr/bin/voicebot1 >voicebot1)
    for other in "$work/deb/voicebot1" "$work/rpm/voicebot1"; do
        [ "$(sha256sum <"$other" | cut -d' ' -f1)" = "$sum" ] \
            || die "the binary in ${other#"$work"/} differs from the tarball's"
    done
    echo "tarball, .deb and .rpm carry the same binary (sha256 ${sum:0:16}...)"
    (cd "$dist" && sha256sum --quiet -c SHA256SUMS) || die "SHA256SUMS does not match the files in $dist"
}

# --- 3. root ------------------------------------------------------------------
cache_complete() {
    [ -f "$CACHE_MARKER" ] && [ "$(cat "$CACHE_MARKER")" = "$CACHE_MARKER_CONTENT" ] && [ -x "$CACHE/usr/bin/dpkg" ]
}

prepare_root() {
    mkdir -p "$VB1_STATE_DIR"
    # One builder at a time; the copy is taken under the same lock.
    exec 8>"$VB1_STATE_DIR/.bullseye-plain.lock"
    flock -w 600 8 || die "another release-check.sh holds $VB1_STATE_DIR/.bullseye-plain.lock"
    if cache_complete; then
        echo "reusing the Debian $SUITE root in $CACHE"
    else
        ensure_commands debootstrap:debootstrap
        [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || apt_install debian-archive-keyring
        build_debian_root "the Debian $SUITE root for release checks" "$SUITE" "" "$CACHE" \
            "$CACHE_MARKER" "$CACHE_MARKER_CONTENT" "$VB1_STATE_DIR/debootstrap-$SUITE-plain.log"
    fi
    unmount_under "$CACHE"
    root="$(mktemp -d "$VB1_STATE_DIR/release-check.XXXXXX")"
    cp -a "$CACHE/." "$root/" || die "cannot copy $CACHE to $root"
    exec 8>&-
    echo "test root: $root (Debian $(cat "$root/etc/debian_version"), $(in_root ldd --version | head -n1))"
}

# --- 4. tarball ---------------------------------------------------------------
tarball() {
    local out
    mkdir -p "$root/opt/tarball"
    tar -xzf "$dist/$REL_TARBALL" -C "$root/opt/tarball"
    out="$(in_root "/opt/tarball/$REL_NAME/voicebot1" --version)" || die "the tarball's voicebot1 --version failed in Debian $SUITE"
    echo "voicebot1 --version: $out"
    [ "$out" = "voicebot1 $VERSION" ] || die "voicebot1 --version printed '$out', expected 'voicebot1 $VERSION'"
    in_root "/opt/tarball/$REL_NAME/voicebot1" --check "/opt/tarball/$REL_NAME/voicebot1.toml" \
        || die "the tarball's voicebot1 --check of its own voicebot1.toml failed"
    rm -rf "$root/opt/tarball"
}

# --- 5. deb -------------------------------------------------------------------
unit_value() {  # unit_value FILE KEY: the last KEY= value in a unit file
    sed -n "s/^$2=//p" "$1" | tail -n1
}

check_unit() {  # check_unit UNIT_FILE CONFIG
    local unit="$1" conf="$2" nofile pmin pmax
    [ "$(unit_value "$unit" User)" = voicebot1 ] || die "$unit: User= is not voicebot1"
    [ "$(unit_value "$unit" Restart)" = on-failure ] || die "$unit: Restart= is not on-failure"
    [ "$(unit_value "$unit" ExecStart)" = "/usr/bin/voicebot1 /etc/voicebot1/voicebot1.toml" ] \
        || die "$unit: ExecStart= does not run /usr/bin/voicebot1 /etc/voicebot1/voicebot1.toml"
    nofile="$(unit_value "$unit" LimitNOFILE)"
    pmin="$(sed -n 's/^port_min *= *\([0-9]*\).*/\1/p' "$conf")"
    pmax="$(sed -n 's/^port_max *= *\([0-9]*\).*/\1/p' "$conf")"
    [[ "$nofile" =~ ^[0-9]+$ && "$pmin" =~ ^[0-9]+$ && "$pmax" =~ ^[0-9]+$ ]] \
        || die "cannot read LimitNOFILE ($nofile) from the unit or port_min/port_max ($pmin/$pmax) from $conf"
    # voicebot1 wants one descriptor per port plus 64 (FDS_BESIDES_PORTS in src/config/mod.rs).
    [ "$nofile" -ge $((pmax - pmin + 1 + 64)) ] \
        || die "LimitNOFILE=$nofile is too small for ports $pmin-$pmax ($((pmax - pmin + 1 + 64)) descriptors)"
    echo "unit: User=voicebot1, Restart=on-failure, LimitNOFILE=$nofile for ports $pmin-$pmax ($((pmax - pmin + 1 + 64)) needed)"
}

# systemd's own parser on the installed unit: an unknown key or a bad value is a
# warning there (the service would run without that setting), an error here.
lint_unit() {
    local out
    if ! command -v systemd-analyze >/dev/null; then
        echo "(unit not linted: no systemd-analyze on this host)"
        return 0
    fi
    # The minimal root has no systemd, hence no sysinit.target: that line is expected.
    out="$(systemd-analyze verify --root="$root" voicebot1.service 2>&1 | grep -v 'Unit sysinit.target not found' || true)"
    [ -z "$out" ] || die "systemd-analyze verify voicebot1.service: $out"
    echo "systemd-analyze verify --root=ROOT voicebot1.service: no warnings ($(systemd-analyze --version | head -n1))"
}

deb() {
    local unit="$root/lib/systemd/system/voicebot1.service" out
    in_root getent passwd voicebot1 >/dev/null && die "the fresh root already has a voicebot1 user"
    cp "$dist/$REL_DEB" "$root/tmp/"
    in_root dpkg -i "/tmp/$REL_DEB" </dev/null || die "dpkg -i $REL_DEB failed in Debian $SUITE"
    echo "dpkg -L voicebot1:"
    in_root dpkg -L voicebot1 | sed 's/^/  /'
    if systemctl --root="$root" cat voicebot1.service >"$work/unit.txt" 2>"$work/unit.err"; then
        echo "systemctl --root=ROOT cat voicebot1.service:"
    else
        echo "(systemctl --root=ROOT cat failed here: $(head -n1 "$work/unit.err"); the file itself:)"
        cp "$unit" "$work/unit.txt"
    fi
    sed 's/^/  /' "$work/unit.txt"
    check_unit "$unit" "$root/etc/voicebot1/voicebot1.toml"
    lint_unit
    out="$(in_root getent passwd voicebot1)" || die "postinst did not create the user voicebot1"
    echo "user: $out"
    echo "config: $(in_root stat -c '%A %U:%G %n' /etc/voicebot1 /etc/voicebot1/voicebot1.toml | tr '\n' ' ')"
    out="$(in_root voicebot1 --version)"
    [ "$out" = "voicebot1 $VERSION" ] || die "/usr/bin/voicebot1 --version printed '$out'"
    in_root_as voicebot1:voicebot1 voicebot1 --check /etc/voicebot1/voicebot1.toml \
        || die "voicebot1 --check /etc/voicebot1/voicebot1.toml failed as user voicebot1"
    if in_root_as nobody:nogroup voicebot1 --check /etc/voicebot1/voicebot1.toml >/dev/null 2>&1; then
        die "user nobody can read /etc/voicebot1/voicebot1.toml (it may hold the ARI password)"
    fi
    echo "as user voicebot1: --check ok; as nobody: refused (cannot read the file)"
    # Upgrade path: the same package again keeps a locally edited conffile, without asking.
    echo "# edited on this box" >>"$root/etc/voicebot1/voicebot1.toml"
    in_root dpkg -i "/tmp/$REL_DEB" </dev/null >/dev/null || die "reinstalling $REL_DEB failed"
    grep -q '^# edited on this box$' "$root/etc/voicebot1/voicebot1.toml" \
        || die "reinstalling $REL_DEB replaced the edited /etc/voicebot1/voicebot1.toml"
    echo "reinstall: edited conffile kept, postinst ran again without error"
    in_root dpkg --purge voicebot1 </dev/null >/dev/null || die "dpkg --purge voicebot1 failed"
    for out in /usr/bin/voicebot1 /etc/voicebot1 /lib/systemd/system/voicebot1.service /usr/share/doc/voicebot1; do
        [ ! -e "$root$out" ] || die "$out is still there after dpkg --purge"
    done
    out="$(in_root dpkg-statoverride --list || true)"
    if grep -q voicebot1 <<<"$out"; then die "dpkg --purge left statoverrides: $out"; fi
    if in_root dpkg -s voicebot1 >/dev/null 2>&1; then die "dpkg still knows voicebot1 after --purge"; fi
    echo "purge: files, /etc/voicebot1 and statoverrides gone; user kept: $(in_root id voicebot1)"
    # The rpm step starts from no user, as on a new box.
    in_root userdel voicebot1
    if in_root getent group voicebot1 >/dev/null; then in_root groupdel voicebot1; fi
}

# --- 6. rpm -------------------------------------------------------------------
rpm_check() {
    local rpmf="$dist/$REL_RPM" files reqs out
    local -a list
    files="$(rpm -qlp "$rpmf")" || die "rpm -qlp $REL_RPM failed"
    mapfile -t list <<<"$files"
    echo "rpm -qlp $REL_RPM:"
    printf '  %s\n' "${list[@]}"
    for out in /usr/bin/voicebot1 /etc/voicebot1/voicebot1.toml /usr/lib/systemd/system/voicebot1.service \
               /usr/share/doc/voicebot1/INSTALL /usr/share/doc/voicebot1/asterisk/pjsip.conf; do
        grep -qx "$out" <<<"$files" || die "$REL_RPM does not contain $out"
    done
    [ "$(rpm -qp --configfiles "$rpmf")" = /etc/voicebot1/voicebot1.toml ] \
        || die "$REL_RPM: /etc/voicebot1/voicebot1.toml is not its (only) config file"
    out="$(rpm -qp --qf '%{VERSION} %{PAYLOADCOMPRESSOR} %{FILEDIGESTALGO}' "$rpmf")"
    echo "version, payload, file digest: $out"
    [ "$out" = "${VERSION//-/\~} gzip 8" ] || die "$REL_RPM: expected version ${VERSION//-/\~}, gzip payload, SHA-256 digests; got '$out'"
    reqs="$(rpm -qp --requires "$rpmf")"
    echo "requires: $(echo "$reqs" | sort -u | tr '\n' ' ')"
    # rpm 4.11 (CentOS 7) knows these rpmlib features; anything else it refuses to install.
    out="$(echo "$reqs" | grep '^rpmlib(' | grep -vE '^rpmlib\((CompressedFileNames|FileDigests|PayloadFilesHavePrefix|PayloadIsXz)\)' || true)"
    [ -z "$out" ] || die "$REL_RPM needs rpm features CentOS 7's rpm 4.11 lacks: $out"
    out="$(echo "$reqs" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)"
    [ "$(printf '%s\n' "$GLIBC_MAX" "$out" | sort -V | tail -n1)" = "$GLIBC_MAX" ] \
        || die "$REL_RPM requires GLIBC_$out, newer than $GLIBC_MAX"
    grep -q 'useradd -r -g voicebot1' <<<"$(rpm -qp --scripts "$rpmf")" || die "$REL_RPM's %pre does not create the voicebot1 user"
    # Install and erase it in the Debian root (rpm runs the scriptlets chrooted there).
    # --force-debian: Debian's rpm would otherwise warn that this is a Debian system.
    rpm --root "$root" --initdb
    rpm --root "$root" -i --nodeps --force-debian "$rpmf" || die "rpm --root ROOT -i $REL_RPM failed"
    echo "rpm --root install: user $(in_root id voicebot1), config $(in_root stat -c '%A %U:%G' /etc/voicebot1/voicebot1.toml)"
    check_unit "$root/usr/lib/systemd/system/voicebot1.service" "$root/etc/voicebot1/voicebot1.toml"
    in_root_as voicebot1:voicebot1 voicebot1 --check /etc/voicebot1/voicebot1.toml \
        || die "after the rpm install, voicebot1 --check failed as user voicebot1"
    rpm --root "$root" -e --force-debian voicebot1 || die "rpm --root ROOT -e voicebot1 failed"
    [ ! -e "$root/usr/bin/voicebot1" ] || die "/usr/bin/voicebot1 is still there after rpm -e"
    echo "rpm --root erase: files gone"
    echo "(not checked here: an install on CentOS 7 itself; no CentOS mirror is reachable)"
}

VERSION="$(voicebot1_version)"
release_names "$VERSION"
ensure_commands objdump:binutils readelf:binutils rpm:rpm rpm2cpio:rpm cpio:cpio dpkg-deb:dpkg
step build build
step binary binary
step root prepare_root
step tarball tarball
step deb deb
step rpm rpm_check
