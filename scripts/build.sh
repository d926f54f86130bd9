#!/usr/bin/env bash
# build.sh DIR [cmake args...]: configure (once) and build with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S . -B "$dir" -G Ninja "$@"
fi
ninja -C "$dir"
