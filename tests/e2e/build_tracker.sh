#!/usr/bin/env bash
# The real Torrust tracker for the e2e tier, built once from crates.io into the cache (idempotent).
# A no-op when both binaries are there. The crate's release profile is `lto = "fat"`, `debug = 1`
# (torrust-tracker 3.0.0 Cargo.toml): ~24 min on 2 cores, most of it one single-threaded fat-LTO
# link. A test build does not need that: thin-local LTO (`lto = false`, 16 codegen units) and no
# debug info cut the cold build (figures in tests/e2e/README.md). The code is the same release;
# throughput figures of `make bench` compare the stack with this same binary bare.
set -euo pipefail
VERSION="${TRACKER_VERSION:-3.0.0}"
CACHE="${TORRUST_CACHE:-/var/cache/torrust-hybrid-tls}"
ROOT="$CACHE/tracker-$VERSION"
if [ -x "$ROOT/bin/torrust-tracker" ] && [ -x "$ROOT/bin/http_health_check" ]; then
  echo "$ROOT/bin"; exit 0
fi
command -v cargo >/dev/null || { echo "cargo is missing (CI: apt-get install cargo, or rustup)" >&2; exit 1; }
mkdir -p "$CACHE"
# The target dir lives in the cache too, so an interrupted build resumes instead of restarting.
CARGO_TARGET_DIR="$CACHE/cargo-target-tracker-$VERSION" \
  CARGO_PROFILE_RELEASE_LTO="${TRACKER_LTO:-false}" CARGO_PROFILE_RELEASE_DEBUG=0 \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo install torrust-tracker --version "$VERSION" --locked --root "$ROOT" >&2
echo "$ROOT/bin"
