#!/usr/bin/env bash
# tsan.sh [--integration] [cmake args...]: the ThreadSanitizer proof of the worker loops
# (docs/architecture.md, "Worker loops"). Builds unit_tests with -fsanitize=thread in build-tsan
# (Debug, -Werror, option SIDECRYPT_TSAN) and runs the unit tests that run code on more than one
# thread: the worker loops and the datapath, the RPC TLS engine and its shared caches (verified
# chains, ticket keys, client sessions, several threads at once), stream sessions, reload, the
# TLS file watch and the instance lock. Any report fails the run (exit 66).
#
#   --integration   also build sidecrypt under TSan and run, as root in network namespaces,
#                   tests/integration/test_rpc_loops.py and test_rpc_reconnect_storm.py (2 loops
#                   in their configs) and test_rpc_tls_resumption.py, each with
#                   SIDECRYPT_TEST_LOOPS=2 (harness.py then writes [runtime] loops = 2 into the
#                   configs of tests that set no loops themselves)
#
# Cost on the project's 2-vCPU machine: docs/architecture.md, "Worker loops".
# libuv, BoringSSL, libsodium and spdlog are Debian's uninstrumented builds: TSan sees their calls
# into libc and pthread (intercepted), not their own memory accesses. tests/tsan.supp lists what is
# suppressed, each line with its reason; sidecrypt's own code is never suppressed.
set -euo pipefail
cd "$(dirname "$0")/.."
integration=0
if [ "${1:-}" = "--integration" ]; then
  integration=1
  shift
fi
dir="${SIDECRYPT_TSAN_DIR:-build-tsan}"
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSIDECRYPT_TSAN=ON "$@"
fi
targets=(unit_tests)
[ "$integration" = 0 ] || targets+=(sidecrypt)
ninja -C "$dir" "${targets[@]}"

# halt_on_error + exitcode: the first report ends the process with 66, so a race fails the test
# (and in the integration tests, the sidecrypt under test dies and the test fails).
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp${TSAN_OPTIONS:+ $TSAN_OPTIONS}"
# gcc 12's TSan cannot map its shadow memory with the 32 random mmap bits of newer kernels;
# without address randomisation it always can (children inherit it: the integration tests).
norandom=(setarch "$(uname -m)" -R)

tags='[loops],[loop],[datapath],[rpc_tls],[stream_session],[stream],[reload],[tlswatch],[instance_lock]'
echo "tsan: unit tests $tags"
"${norandom[@]}" "$dir/tests/unit_tests" "$tags"

if [ "$integration" = 1 ]; then
  for t in test_rpc_loops test_rpc_tls_resumption test_rpc_reconnect_storm; do
    echo "tsan: tests/integration/$t.py with 2 loops"
    CI=true SIDECRYPT_TEST_LOOPS=2 SIDECRYPT_BIN="$PWD/$dir/sidecrypt" \
      "${norandom[@]}" /usr/bin/python3 "tests/integration/$t.py"
  done
fi
echo "tsan: no data race reported"
