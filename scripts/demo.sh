#!/usr/bin/env bash
# The demo command of README.md: installs what is needed, builds, and shows sidecrypt at work.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
exec bash scripts/demo/run.sh build/sidecrypt
