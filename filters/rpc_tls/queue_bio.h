#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include <openssl/bio.h>
#include "filters/common/boringssl.h"

namespace sidecrypt::filters::rpc_tls {

// A memory BIO for the TLS engine's two directions. BoringSSL's BIO_s_mem moves everything still
// buffered to the front after every read; SSL_read reads each record in two steps (header, then
// body), so with 64 KiB of ciphertext buffered that is several times the data in memmove per
// record. This one reads by advancing an offset and compacts only when most of it is consumed.
// Reading from an empty queue asks for a retry (like a mem BIO with eof_return -1) until
// queueBioSetEof(), after which it reads as end of file.
BIO* newQueueBio();
size_t queueBioPending(BIO* bio);
// Appends; returns false only if memory runs out.
bool queueBioWrite(BIO* bio, std::span<const uint8_t> bytes);
size_t queueBioRead(BIO* bio, std::span<uint8_t> out);
void queueBioSetEof(BIO* bio);

}  // namespace sidecrypt::filters::rpc_tls
