#!/usr/bin/env bash
# Build the Debian package guardian-oom with Debian's own tools (dpkg-buildpackage, debhelper,
# pybuild), offline, from this checkout, without touching it: the files git knows (as the
# working tree has them) are copied to a temporary directory and built there; the .deb (and
# with --lintian, lintian's verdict) is all that comes back.
#
#   bash scripts/build_deb.sh [--lintian] [--version VERSION] OUTDIR
#
# --version VERSION builds the same tree as another version (debian/changelog gets an entry,
# guardian/__init__.py its __version__), e.g. an older build for an upgrade test.
# Needs: apt-get install debhelper dh-python pybuild-plugin-pyproject python3-all
# python3-setuptools python3-wheel (and lintian); scripts/setup.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

LINTIAN=0
VERSION=
while [ $# -gt 1 ]; do
    case "$1" in
        --lintian) LINTIAN=1 ;;
        --version)
            VERSION=$2
            shift
            ;;
        *) break ;;
    esac
    shift
done
[ $# = 1 ] || {
    echo "usage: $0 [--lintian] [--version VERSION] OUTDIR" >&2
    exit 2
}
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

WORK=$(mktemp -d /tmp/guardian-deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/guardian-oom
mkdir "$SRC"
# tracked files, plus new ones not ignored (what the next commit would hold), working-tree content
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$SRC"

if [ -n "$VERSION" ]; then
    sed -i "s/^__version__ = .*/__version__ = \"$VERSION\"/" "$SRC/guardian/__init__.py"
    {
        printf 'guardian-oom (%s) unstable; urgency=medium\n\n  * Built as %s from the same tree.\n\n' "$VERSION" "$VERSION"
        printf ' -- %s  %s\n\n' "$(sed -n 's/^Maintainer: //p' "$SRC/debian/control")" "$(date -R)"
        cat "$SRC/debian/changelog"
    } >"$SRC/debian/changelog.new"
    mv "$SRC/debian/changelog.new" "$SRC/debian/changelog"
fi

# Debian's python3 and tools only: an interpreter earlier in PATH (a venv, pyenv) has none of
# Debian's modules (build, installer) and would build for itself.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH VIRTUAL_ENV
(cd "$SRC" && dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    echo "build_deb: dpkg-buildpackage failed" >&2
    exit 1
}
# the package only: its -dbgsym companion (the binding's debug symbols) stays behind
cp "$WORK"/guardian-oom_*.deb "$OUT/"
if [ "$LINTIAN" = 1 ]; then
    # --fail-on warning: an error or a warning that debian/*lintian-overrides does not justify
    lintian --fail-on error,warning --info "$WORK"/*.changes | tee "$OUT/lintian.txt"
fi
ls "$WORK"/*.deb | xargs -n1 basename
