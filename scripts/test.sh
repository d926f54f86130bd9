#!/usr/bin/env bash
# The test command of README.md: installs what is needed, builds, and runs every test:
# unit tests (incl. golden vectors and fuzz-corpus replay), the same under ASan+UBSan, and the
# integration tests (real processes, network namespaces; root). Prints the time of each stage.
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { printf '\n==== %s ====\n' "$*"; STAGE_START=$(date +%s); }
done_stage() { echo "---- $1: $(( $(date +%s) - STAGE_START ))s"; }

stage "install dependencies"
bash scripts/install-deps.sh
done_stage "install dependencies"

stage "build (gcc, -Werror)"
bash scripts/build.sh build -DCMAKE_BUILD_TYPE=RelWithDebInfo
done_stage "build"

stage "unit tests"
(cd build && ctest -L unit -j"$(nproc)" --output-on-failure)
done_stage "unit tests"

stage "build (ASan+UBSan)"
bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DSIDECRYPT_SANITIZE=ON
done_stage "build (ASan+UBSan)"

stage "unit tests under ASan+UBSan"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest -L unit -j"$(nproc)" --output-on-failure)
done_stage "unit tests under ASan+UBSan"

stage "integration tests"
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root, so namespace tests will be skipped (CI runs them as root)"
fi
(cd build && ctest -L integration --output-on-failure)
done_stage "integration tests"
