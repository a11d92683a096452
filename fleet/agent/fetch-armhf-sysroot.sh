#!/bin/sh
# fetch-armhf-sysroot.sh DEST: the target libraries ecufl-agent links statically for the i.MX6
# (OpenSSL, protobuf-c, zlib), from Debian's armhf packages, unpacked into DEST (a sysroot for
# `cmake -DECUFL_AGENT_SYSROOT=DEST`). Nothing is installed on this machine.
#
# Why not `apt-get install libssl-dev:armhf`: multiarch co-installation needs the armhf package at
# exactly the version of the installed amd64 one, and the mirror's armhf OpenSSL is often newer
# (here 3.0.20 vs the host's 3.0.19); it would also need `dpkg --add-architecture armhf`. Instead
# apt runs with a PRIVATE configuration (the system's Debian sources, architecture armhf, own lists,
# cache and an empty dpkg status under DEST/.apt): `apt-get download` fetches the .debs and
# `dpkg -x` unpacks them. The system's apt/dpkg configuration, lists and cache are never touched.
# The cross C library itself comes from Debian's gcc-arm-linux-gnueabihf (libc6-dev-armhf-cross).
#
# fetch-armhf-sysroot.sh --python DEST: instead, Debian's armhf python3 (3.11), python3-numpy and
# python3-protobuf with everything they depend on (libc6 included, apt resolves the closure), for
# `qemu-arm -cpu cortex-a9 -L DEST DEST/usr/bin/python3.11`: what a supernode board's Python client
# stack costs on the A9 is counted there (`ecufl calibrate --client-stack`). A separate DEST, so the
# agent's sysroot keeps only what the agent links.
set -eu
PYTHON=0
if [ "${1:-}" = "--python" ]; then PYTHON=1; shift; fi
DEST=${1:?usage: fetch-armhf-sysroot.sh [--python] DEST}
PACKAGES="libssl-dev libssl3 libprotobuf-c-dev libprotobuf-c1 zlib1g-dev zlib1g"
PYTHON_PACKAGES="python3-minimal python3-numpy python3-protobuf"
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
APT="$DEST/.apt"
rm -f "$DEST/PACKAGES"
rm -rf "$APT"
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs"
: > "$APT/status"

n=0
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  cp "$f" "$APT/sources.list.d/"; n=$((n + 1))
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  grep -E '^[[:space:]]*deb[[:space:]]' "$f" > "$APT/sources.list.d/$(basename "$f" .list).list" || true; n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "fetch-armhf-sysroot: no apt sources found under /etc/apt" >&2; exit 1; }

set -- -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT/sources.list.d" \
       -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o Dir::State::status="$APT/status" \
       -o APT::Architecture=armhf -o APT::Architectures=armhf -o APT::Sandbox::User=root
# One index failing (a mirror mid-sync, a third-party entry without armhf) must not stop us: the
# packages are in the main Debian suite.
apt-get -qq "$@" update || echo "fetch-armhf-sysroot: some package lists failed to update; trying anyway" >&2
if [ "$PYTHON" = 1 ]; then
  # the closure of the Python packages as apt would install it on an empty armhf system
  PACKAGES=$(apt-get "$@" -s --no-install-recommends install $PYTHON_PACKAGES | sed -n 's/^Inst \([^ ]*\) .*/\1/p')
  [ -n "$PACKAGES" ] || { echo "fetch-armhf-sysroot: apt resolved no packages for $PYTHON_PACKAGES" >&2; exit 1; }
fi
(cd "$APT/debs" && apt-get -qq "$@" download $PACKAGES)
for deb in "$APT"/debs/*.deb; do
  dpkg -x "$deb" "$DEST"
  basename "$deb"
done > "$APT/PACKAGES"
if [ "$PYTHON" = 1 ]; then
  # what update-alternatives does in the postinst of libblas3/liblapack3 (dpkg -x runs no scripts)
  for l in blas/libblas.so.3 lapack/liblapack.so.3; do
    ln -sf "$l" "$DEST/usr/lib/arm-linux-gnueabihf/$(basename "$l")"
  done
  for f in usr/bin/python3.11 lib/ld-linux-armhf.so.3 usr/lib/python3/dist-packages/numpy/__init__.py; do
    [ -e "$DEST/$f" ] || { echo "fetch-armhf-sysroot: $f missing after unpacking" >&2; exit 1; }
  done
else
  for lib in libssl.a libcrypto.a libprotobuf-c.a libz.a; do
    [ -f "$DEST/usr/lib/arm-linux-gnueabihf/$lib" ] || { echo "fetch-armhf-sysroot: $lib missing after unpacking" >&2; exit 1; }
  done
fi
mv "$APT/PACKAGES" "$DEST/PACKAGES"   # last: its presence says the sysroot is complete
rm -rf "$APT"
echo "armhf sysroot in $DEST: $(tr '\n' ' ' < "$DEST/PACKAGES")"
