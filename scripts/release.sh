#!/usr/bin/env bash
# release.sh -- the portable release: one stripped x86_64 voicebot1 that needs
# nothing newer than glibc 2.17 (cargo zigbuild, [profile.dist]), packaged three
# ways, with the version from Cargo.toml:
#   dist/voicebot1-VERSION-x86_64-linux-gnu.tar.gz   voicebot1, voicebot1.toml,
#        voicebot1.service, asterisk/*.conf, INSTALL, README.md
#   dist/voicebot1_VERSION_amd64.deb                  dpkg-deb (conf/packaging/deb)
#   dist/voicebot1-VERSION-1.x86_64.rpm               rpmbuild (conf/packaging/rpm)
#   dist/SHA256SUMS
#
#   scripts/release.sh [--out DIR]
#
# Installs what it needs when missing: ziglang and cargo-zigbuild from PyPI (into
# a venv under VB1_TOOLS_DIR, /var/cache/voicebot1-release, unless cargo-zigbuild
# and zig already work here), and the Debian packages rpm, binutils, jq, python3.
# scripts/release-check.sh checks the result.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# The glibc the binary is built against (zig provides its symbol lists).
GLIBC_TARGET=2.17
RUST_TARGET=x86_64-unknown-linux-gnu
PROFILE=dist
VB1_TOOLS_DIR="${VB1_TOOLS_DIR:-/var/cache/voicebot1-release}"
MAINTAINER="${VB1_PKG_MAINTAINER:-voicebot1 maintainers <root@localhost>}"

out="$VB1_REPO_DIR/dist"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# cargo-zigbuild finds zig on PATH or as "python3 -m ziglang".
zig_works() {
    command -v cargo-zigbuild >/dev/null || return 1
    zig version >/dev/null 2>&1 || python3 -m ziglang version >/dev/null 2>&1
}

ensure_zigbuild() {
    local venv="$VB1_TOOLS_DIR/venv"
    zig_works && return 0
    if [ ! -x "$venv/bin/cargo-zigbuild" ] || ! "$venv/bin/python3" -m ziglang version >/dev/null 2>&1; then
        ensure_commands python3:python3
        rm -rf "$venv"
        mkdir -p "$VB1_TOOLS_DIR"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            apt_install python3-venv
            python3 -m venv "$venv" || die "cannot create a Python venv in $venv"
        fi
        log "installing ziglang and cargo-zigbuild from PyPI into $venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check ziglang cargo-zigbuild \
            || die "pip install ziglang cargo-zigbuild failed (PyPI unreachable?)"
    fi
    PATH="$venv/bin:$PATH"
    zig_works || die "cargo-zigbuild or zig does not run from $venv"
}

ensure_rust_target() {
    command -v cargo >/dev/null || die "cargo not found (the Rust toolchain is needed)"
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$RUST_TARGET"; then
        log "adding the Rust target $RUST_TARGET"
        rustup target add "$RUST_TARGET" || die "rustup target add $RUST_TARGET failed"
    fi
}

# Fill a template: @KEY@ -> value, and refuse to leave any @KEY@ behind.
# (patsub_replacement off: an "&" in a value stays an "&".)
fill() {  # fill TEMPLATE OUT KEY=VALUE...
    local tpl="$1" dst="$2" kv text
    shopt -u patsub_replacement 2>/dev/null || true
    shift 2
    text="$(cat "$tpl")"
    for kv in "$@"; do text="${text//@${kv%%=*}@/${kv#*=}}"; done
    if grep -q '@[A-Z_]*@' <<<"$text"; then
        die "$(basename "$tpl"): placeholder left unfilled: $(grep -o '@[A-Z_]*@' <<<"$text" | sort -u | tr '\n' ' ')"
    fi
    printf '%s\n' "$text" >"$dst"
}

# The files every form of the release carries, laid out under a root.
stage_tree() {  # stage_tree ROOT UNIT_DIR
    local r="$1" unit_dir="$2" doc="$1/usr/share/doc/voicebot1"
    install -D -m 0755 "$bin" "$r/usr/bin/voicebot1"
    install -D -m 0644 "$VB1_REPO_DIR/conf/voicebot1.toml" "$r/etc/voicebot1/voicebot1.toml"
    install -D -m 0644 "$VB1_REPO_DIR/conf/systemd/voicebot1.service" "$r$unit_dir/voicebot1.service"
    install -D -m 0644 "$VB1_REPO_DIR/conf/packaging/INSTALL" "$doc/INSTALL"
    install -m 0644 "$VB1_REPO_DIR/README.md" "$doc/README.md"
    install -d -m 0755 "$doc/asterisk"
    install -m 0644 "$VB1_REPO_DIR"/conf/asterisk/*.conf "$doc/asterisk/"
}

t0=$SECONDS
version="$(voicebot1_version)"
release_names "$version"
pkg_version="${version//-/\~}"
summary="$(awk -F'"' '/^description *=/ { print $2; exit }' "$VB1_REPO_DIR/Cargo.toml")"
[ -n "$summary" ] || die "Cargo.toml has no description"
# Reproducible timestamps: the last commit's time (now, outside git).
SOURCE_DATE_EPOCH="$(git -C "$VB1_REPO_DIR" log -1 --format=%ct 2>/dev/null || date +%s)"
export SOURCE_DATE_EPOCH

ensure_commands jq:jq objdump:binutils rpmbuild:rpm dpkg-deb:dpkg
ensure_rust_target
ensure_zigbuild

log "building voicebot1 $version: cargo zigbuild --locked --profile $PROFILE --target $RUST_TARGET.$GLIBC_TARGET"
(cd "$VB1_REPO_DIR" && cargo zigbuild --locked --profile "$PROFILE" --target "$RUST_TARGET.$GLIBC_TARGET") \
    || die "cargo zigbuild failed"
target_dir="$(cd "$VB1_REPO_DIR" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
bin="$target_dir/$RUST_TARGET/$PROFILE/voicebot1"
[ -x "$bin" ] || die "$bin not found after the build"
glibc_min="$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n1)"
[ -n "$glibc_min" ] || die "objdump -T $bin lists no GLIBC_ symbol version"

work="$(mktemp -d /tmp/vb1-release.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out/$REL_TARBALL" "$out/$REL_DEB" "$out/$REL_RPM" "$out/SHA256SUMS"

# 1. Tarball: a flat directory, installed by hand (INSTALL).
t="$work/$REL_NAME"
install -D -m 0755 "$bin" "$t/voicebot1"
install -m 0644 "$VB1_REPO_DIR/conf/voicebot1.toml" "$VB1_REPO_DIR/conf/systemd/voicebot1.service" \
    "$VB1_REPO_DIR/conf/packaging/INSTALL" "$VB1_REPO_DIR/README.md" "$t/"
install -d -m 0755 "$t/asterisk"
install -m 0644 "$VB1_REPO_DIR"/conf/asterisk/*.conf "$t/asterisk/"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" -C "$work" -cf - "$REL_NAME" \
    | gzip -9n >"$out/$REL_TARBALL"

# 2. .deb (Debian/Ubuntu: the unit in /lib/systemd/system, found with or without merged /usr).
d="$work/deb"
stage_tree "$d" /lib/systemd/system
install -d -m 0755 "$d/DEBIAN"
fill "$VB1_REPO_DIR/conf/packaging/deb/control.in" "$d/DEBIAN/control" \
    "DEB_VERSION=$pkg_version" "MAINTAINER=$MAINTAINER" "SUMMARY=$summary" "GLIBC_MIN=$glibc_min" \
    "INSTALLED_SIZE=$(du -sk "$d" | cut -f1)"
echo /etc/voicebot1/voicebot1.toml >"$d/DEBIAN/conffiles"
install -m 0755 "$VB1_REPO_DIR"/conf/packaging/deb/{postinst,prerm,postrm} "$d/DEBIAN/"
dpkg-deb --root-owner-group -Zxz --build "$d" "$out/$REL_DEB" >/dev/null || die "dpkg-deb --build failed"

# 3. .rpm (CentOS 7 and later: the unit in /usr/lib/systemd/system).
r="$work/rpm-stage"
stage_tree "$r" /usr/lib/systemd/system
mkdir -p "$work/rpmbuild"
fill "$VB1_REPO_DIR/conf/packaging/rpm/voicebot1.spec.in" "$work/voicebot1.spec" \
    "RPM_VERSION=$pkg_version" "SUMMARY=$summary" "STAGE=$r"
# gzip payload and SHA-256 file digests: what rpm 4.11 (CentOS 7) reads.
rpmbuild -bb --quiet --target x86_64 \
    --define "_topdir $work/rpmbuild" \
    --define "_binary_payload w9.gzdio" \
    --define "_binary_filedigest_algorithm 8" \
    "$work/voicebot1.spec" >"$work/rpmbuild.log" 2>&1 \
    || { tail -n 20 "$work/rpmbuild.log" >&2; die "rpmbuild failed (log above)"; }
[ -f "$work/rpmbuild/RPMS/x86_64/$REL_RPM" ] \
    || die "rpmbuild did not write $REL_RPM (found: $(find "$work/rpmbuild/RPMS" -type f -printf '%f ' 2>/dev/null))"
cp "$work/rpmbuild/RPMS/x86_64/$REL_RPM" "$out/"

(cd "$out" && sha256sum "$REL_TARBALL" "$REL_DEB" "$REL_RPM" >SHA256SUMS)
log "release $version built in $((SECONDS - t0)) s (binary $(stat -c %s "$bin") bytes, needs glibc >= $glibc_min):"
for f in "$REL_TARBALL" "$REL_DEB" "$REL_RPM" SHA256SUMS; do
    printf '  %s  %s bytes\n' "$out/$f" "$(stat -c %s "$out/$f")"
done
