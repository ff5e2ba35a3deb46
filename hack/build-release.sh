#!/usr/bin/env bash
# Builds the static release binaries the container images ship: atrium-operator and
# atrium-router, statically linked (glibc's static PIE: no libc needed at run time, so the images
# can use a distroless/static base). The Dockerfiles run exactly this script; `make test` runs it
# too and checks the result is static and starts.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
out=${1:-target/release-static}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --workspace --target "$target" --bin atrium-operator --bin atrium-router
mkdir -p "$out"
dir=${CARGO_TARGET_DIR:-target}/$target/release
cp "$dir/atrium-operator" "$dir/atrium-router" "$out/"
echo "$out"
