#pragma once

// Every source that uses BoringSSL includes this first. Debian installs OpenSSL 3 headers in
// /usr/include/openssl as well; if the include order ever picks those, fail loudly here instead
// of linking mismatched symbols.
#include <openssl/base.h>

#if !defined(OPENSSL_IS_BORINGSSL)
#error "sidecrypt must be built against BoringSSL (android-libboringssl-dev), not OpenSSL"
#endif
