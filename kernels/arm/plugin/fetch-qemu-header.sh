#!/bin/sh
# Fetch qemu's TCG plugin header (include/qemu/qemu-plugin.h) from Debian's qemu source package,
# the same version as the installed qemu-user, into DEST/include/.
#
# apt runs on a PRIVATE source list made from the system's own Debian entries (deb -> deb-src),
# with private package lists and cache under DEST/apt: the system's apt configuration, lists and
# cache are never touched. Needs dpkg-dev (dpkg-source) and network access to the Debian mirror
# the system already uses.
set -eu
DEST=${1:?usage: fetch-qemu-header.sh DEST}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
APT="$DEST/apt"
rm -rf "$APT" "$DEST/src"
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial" "$DEST/src" "$DEST/include"

# The system's entries, turned into source entries (deb822 .sources and one-line .list files).
n=0
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  sed 's/^Types:.*/Types: deb-src/' "$f" > "$APT/sources.list.d/$(basename "$f")"; n=$((n + 1))
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" > "$APT/sources.list.d/$(basename "$f" .list)-src.list"; n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "fetch-qemu-header: no apt sources found under /etc/apt" >&2; exit 1; }

set -- -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT/sources.list.d" \
       -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o APT::Sandbox::User=root
# A third-party entry without sources must not stop us: the Debian ones are what we need.
apt-get -qq "$@" update || echo "fetch-qemu-header: some source lists failed to update; trying anyway" >&2

version=$(dpkg-query -W -f='${source:Version}' qemu-user 2>/dev/null || true)
cd "$DEST/src"
if ! { [ -n "$version" ] && apt-get -qq "$@" source "qemu=$version" >/dev/null; }; then
  echo "fetch-qemu-header: qemu source $version not found, taking the newest in the lists" >&2
  apt-get -qq "$@" source qemu >/dev/null
fi
header=$(ls -d "$DEST"/src/qemu-*/include/qemu/qemu-plugin.h | head -n 1)
[ -f "$header" ] || { echo "fetch-qemu-header: no include/qemu/qemu-plugin.h in the qemu source" >&2; exit 1; }
cp "$header" "$DEST/include/qemu-plugin.h"
basename "$(ls -d "$DEST"/src/qemu_*.dsc | head -n 1)" .dsc > "$DEST/include/SOURCE"
rm -rf "$DEST/src" "$APT"   # ~300 MB unpacked; the header is all we keep
echo "qemu plugin header from $(cat "$DEST/include/SOURCE") in $DEST/include"
