#!/usr/bin/env bash
# The real Pulumi CLI for the engine tier (tests/engine/README.md), built once from the Go module
# proxy into the cache (idempotent; ~13-17 min cold on 2 cores, a no-op when cached). Prints the
# folder holding the `pulumi` binary.
#
# `go install github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@v3.274.0` is refused: pkg's go.mod replaces
# sdk/v3 with a local path (`../sdk`). So a throw-away wrapper module requires pkg/v3 and sdk/v3 at
# the same version and carries pkg's one non-local replace (github.com/atotto/clipboard), then
# builds the CLI's main package from the module cache. Nothing of Pulumi's is committed here.
set -euo pipefail
VERSION="${PULUMI_CLI_VERSION:-v3.274.0}"
CACHE="${TORRUST_CACHE:-/var/cache/torrust-hybrid-tls}"
OUT="$CACHE/pulumi-cli-$VERSION"
if [ -x "$OUT/pulumi" ]; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "go is missing (it needs Go >= 1.26: golang.org/toolchain)" >&2; exit 1; }
mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/.pulumi-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mod_file() { curl -fsS "${GOPROXY_URL:-https://proxy.golang.org}/github.com/pulumi/pulumi/pkg/v3/@v/$VERSION.mod"; }
# pkg's own non-local replace lines, verbatim (the CLI is built with them upstream).
replaces="$(mod_file | sed -n 's/^replace \(github.com\/atotto\/clipboard .*\)$/replace \1/p')"
cat > "$work/go.mod" <<MOD
module torrust-hybrid-tls/pulumi-cli-wrapper

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 $VERSION
	github.com/pulumi/pulumi/sdk/v3 $VERSION
)

$replaces
MOD
cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
GO
(
  cd "$work"
  export GOFLAGS=-mod=mod GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  go mod tidy -e >&2 2>&1 || true
  go get "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@$VERSION" >&2
  # The version the CLI reports (`pulumi version`) is set by ldflags upstream (its Makefile).
  go build -trimpath -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$VERSION" \
    -o "$work/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi >&2
)
mkdir -p "$OUT.tmp" && mv "$work/bin/pulumi" "$OUT.tmp/pulumi" && rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "$OUT"
