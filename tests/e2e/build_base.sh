#!/usr/bin/env bash
# Debian 12 rootfs for every locally built image of the e2e tier (tests/e2e/README.md), cached as a
# tarball. Idempotent: an existing tarball whose package list matches is reused.
# Usage: tests/e2e/build_base.sh  -> prints the tarball path
set -euo pipefail
CACHE="${TORRUST_CACHE:-/var/cache/torrust-hybrid-tls}/images"
# One base for all images: the containers have no network to run apt in, so every package any image
# needs is installed here (Debian's builds stand in for the pinned upstream images; see README).
PACKAGES=(ca-certificates python3 python3-yaml wget nginx certbot sqlite3 libssl3 tini
  prometheus prometheus-alertmanager prometheus-blackbox-exporter prometheus-node-exporter)
key="$(printf '%s\n' bookworm "${PACKAGES[@]}" | sha256sum | cut -c1-12)"
out="$CACHE/debian12-base-$key.tar"
if [ -s "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$CACHE"
tmp="$CACHE/.building-$$.tar"  # mmdebstrap picks the format from the .tar suffix
trap 'rm -f "$tmp"' EXIT
include="$(IFS=,; echo "${PACKAGES[*]}")"
mmdebstrap --quiet --variant=minbase --include="$include" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm "$tmp" "http://deb.debian.org/debian" >&2
mv "$tmp" "$out"
trap - EXIT
echo "$out"
