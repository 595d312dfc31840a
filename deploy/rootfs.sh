#!/bin/sh
# rootfs.sh BINARY PROBE OUTDIR — lays out the root filesystem of one runtime image in
# OUTDIR: the stripped BINARY and PROBE (the HEALTHCHECK program) in /usr/local/bin, every
# shared library ldd names for them at the same path as in the build stage (the dynamic
# loader included), a passwd/group with the unprivileged user lotmesh (65532), an nsswitch.conf
# that resolves host names through /etc/hosts and DNS, and empty /data (owned by lotmesh) and
# /tmp (1777). Runs in the build stage of deploy/Containerfile.
set -eu
bin=$1 probe=$2 out=$3
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/data" "$out/tmp"
for f in "$bin" "$probe"; do
  install -m 0755 "$f" "$out/usr/local/bin/"
  strip --strip-unneeded "$out/usr/local/bin/$(basename "$f")"
done
for f in "$bin" "$probe"; do
  ldd "$f" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}'
done | sort -u | while read -r lib; do
  real=$(readlink -f "$lib")
  mkdir -p "$out$(dirname "$lib")"
  cp "$real" "$out$lib"
  strip --strip-unneeded "$out$lib" 2>/dev/null || true
done
printf 'root:x:0:0:root:/:/nonexistent\nlotmesh:x:65532:65532:lotmesh:/data:/nonexistent\n' > "$out/etc/passwd"
printf 'root:x:0:\nlotmesh:x:65532:\n' > "$out/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$out/etc/nsswitch.conf"
chown 65532:65532 "$out/data"
chmod 0755 "$out/data"
chmod 1777 "$out/tmp"
