#pragma once

#include <string>

namespace sidecrypt::filters::rpc_tls {

// Turns the calling thread's BoringSSL error queue into one readable line and empties it.
// docs/spec/toolchain.md §3.3: call this right after the failing SSL_* call, before any other SSL_*
// call on the thread, or the queue may describe a different failure. `verify_result` (from
// SSL_get_verify_result) is appended when the failure is a certificate verification failure,
// e.g. "certificate verify failed: hostname mismatch". Returns "" when the queue is empty.
std::string drainSslErrors(long verify_result = 0);

}  // namespace sidecrypt::filters::rpc_tls
