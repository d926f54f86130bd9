#!/usr/bin/env bash
# The test command of README.md: installs what is needed, builds, and runs every test:
# unit tests (incl. golden vectors and fuzz-corpus replay), the same under ASan+UBSan, and the
# integration tests (real processes, network namespaces; root). Prints the time of each stage.
#
# Subsets (for runs that check something else, e.g. scripts/ci/pristine.sh; the default is all):
#   SIDECRYPT_TEST_ASAN=0                 skip the ASan+UBSan build and its unit tests
#   SIDECRYPT_TEST_INTEGRATION=REGEX      run only the integration tests whose ctest name
#                                         (integration.test_NAME) matches REGEX
set -euo pipefail
cd "$(dirname "$0")/.."
asan="${SIDECRYPT_TEST_ASAN:-1}"
integration="${SIDECRYPT_TEST_INTEGRATION:-}"
case "$asan" in 0|1) ;; *) echo "SIDECRYPT_TEST_ASAN must be 0 or 1, not '$asan'" >&2; exit 2 ;; esac
[ "$asan" = 1 ] || echo "test.sh: SIDECRYPT_TEST_ASAN=0: skipping the ASan+UBSan build and unit tests"
[ -z "$integration" ] || echo "test.sh: SIDECRYPT_TEST_INTEGRATION: only integration tests matching '$integration'"
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

if [ "$asan" = 1 ]; then
  stage "build (ASan+UBSan)"
  bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DSIDECRYPT_SANITIZE=ON
  done_stage "build (ASan+UBSan)"

  stage "unit tests under ASan+UBSan"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest -L unit -j"$(nproc)" --output-on-failure)
  done_stage "unit tests under ASan+UBSan"
fi

stage "integration tests"
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root, so namespace tests will be skipped (CI runs them as root)"
fi
if [ -n "$integration" ]; then
  # --no-tests=error: a regex that matches nothing must not pass quietly.
  (cd build && ctest -L integration -R "$integration" --no-tests=error --output-on-failure)
else
  (cd build && ctest -L integration --output-on-failure)
fi
done_stage "integration tests"
