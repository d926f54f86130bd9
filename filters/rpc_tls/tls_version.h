#pragma once

#include <cstdint>

namespace sidecrypt::filters::rpc_tls {

// The lowest TLS version a context accepts (Consul's tls_min_version). The one definition: the
// config loader parses proxy.toml into it, TlsContext applies it.
enum class TlsVersion : uint8_t { Tls10, Tls11, Tls12, Tls13 };

}  // namespace sidecrypt::filters::rpc_tls
