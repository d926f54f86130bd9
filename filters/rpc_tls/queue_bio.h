#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include <openssl/bio.h>
#include "filters/common/boringssl.h"
#include "filters/common/buffer.h"

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
// Zero-copy transport: a caller's buffer attached to a queue, until detached (nullptr) before
// the buffer goes away. queueBioPending() counts the queue's own bytes only.
// As a source (the read side): reads go on from `ext` once the queue's own bytes are used up,
// draining what they take.
void queueBioAttachSource(BIO* bio, Buffer* ext);
// As a sink (the write side): writes append straight to `ext`; bytes the queue already held move
// there first, so their order holds.
void queueBioAttachSink(BIO* bio, Buffer* ext);

}  // namespace sidecrypt::filters::rpc_tls
