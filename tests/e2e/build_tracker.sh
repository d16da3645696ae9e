#!/usr/bin/env bash
# The real Torrust tracker for the e2e tier, built once from crates.io into the cache (idempotent).
# ~20-30 min cold on 2 cores; a no-op when both binaries are there.
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
  cargo install torrust-tracker --version "$VERSION" --locked --root "$ROOT" >&2
echo "$ROOT/bin"
