// The TLS engine's memory BIO: bytes come out in order whatever the read sizes, an empty queue
// asks for a retry until EOF is set, and BIO_read/BIO_write (as BoringSSL calls them) agree with
// the direct helpers.
#include <catch2/catch.hpp>

#include <vector>

#include "filters/rpc_tls/queue_bio.h"

using namespace sidecrypt::filters::rpc_tls;

TEST_CASE("queue_bio: order, partial reads, compaction, retry and EOF", "[tls][bio]") {
  BIO* bio = newQueueBio();
  REQUIRE(bio != nullptr);
  // Reading a queue that never held anything (the engine's encOut with nothing pending).
  std::vector<uint8_t> none(16);
  CHECK(queueBioRead(bio, none) == 0);
  CHECK(queueBioRead(bio, std::span<uint8_t>()) == 0);
  std::vector<uint8_t> in(200 * 1024);
  for (size_t i = 0; i < in.size(); ++i) {
    in[i] = static_cast<uint8_t>(i * 7 + i / 251);
  }
  std::vector<uint8_t> out;
  size_t written = 0;
  size_t step = 1;
  while (out.size() < in.size()) {
    // Interleave writes of 64 KiB with reads of growing odd sizes, through both interfaces.
    if (written < in.size() && queueBioPending(bio) < 64 * 1024) {
      const size_t n = std::min<size_t>(64 * 1024, in.size() - written);
      if ((written / 1024) % 2 == 0) {
        REQUIRE(queueBioWrite(bio, {in.data() + written, n}));
      } else {
        REQUIRE(BIO_write(bio, in.data() + written, static_cast<int>(n)) == static_cast<int>(n));
      }
      written += n;
    }
    std::vector<uint8_t> chunk(step);
    const int got = step % 2 == 0 ? BIO_read(bio, chunk.data(), static_cast<int>(chunk.size()))
                                  : static_cast<int>(queueBioRead(bio, chunk));
    REQUIRE(got > 0);
    out.insert(out.end(), chunk.begin(), chunk.begin() + got);
    step = step * 3 % 17000 + 5;
  }
  CHECK(out == in);
  CHECK(queueBioPending(bio) == 0);
  CHECK(BIO_ctrl_pending(bio) == 0);
  uint8_t b = 0;
  CHECK(BIO_read(bio, &b, 1) == -1);
  CHECK(BIO_should_retry(bio));
  CHECK(BIO_should_read(bio));
  REQUIRE(queueBioWrite(bio, std::vector<uint8_t>{42}));
  CHECK(BIO_ctrl_pending(bio) == 1);
  queueBioSetEof(bio);
  CHECK(BIO_read(bio, &b, 1) == 1);  // what was buffered still comes first
  CHECK(b == 42);
  CHECK(BIO_read(bio, &b, 1) == 0);  // then end of file, not a retry
  CHECK_FALSE(BIO_should_retry(bio));
  BIO_free(bio);
}

TEST_CASE("queue_bio: an attached source is read after the own bytes and drained as read",
          "[tls][bio]") {
  BIO* bio = newQueueBio();
  REQUIRE(bio != nullptr);
  REQUIRE(queueBioWrite(bio, std::vector<uint8_t>{1, 2, 3}));
  sidecrypt::filters::Buffer ext;
  ext.append(std::vector<uint8_t>{4, 5, 6, 7});
  queueBioAttachSource(bio, &ext);
  CHECK(BIO_ctrl_pending(bio) == 7);
  CHECK(queueBioPending(bio) == 3);  // the queue's own bytes only
  std::vector<uint8_t> got;
  uint8_t buf[2];
  for (int i = 0; i < 10; ++i) {
    const int n = BIO_read(bio, buf, sizeof buf);
    if (n <= 0) {
      break;
    }
    got.insert(got.end(), buf, buf + n);
  }
  CHECK(got == std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7});
  CHECK(ext.empty());
  CHECK(BIO_should_retry(bio));  // both empty and no EOF: a retry, as before
  ext.append(std::vector<uint8_t>{8});
  queueBioSetEof(bio);
  CHECK(BIO_eof(bio) == 0);  // EOF only once the attached bytes are read too
  CHECK(BIO_read(bio, buf, 1) == 1);
  CHECK(buf[0] == 8);
  CHECK(BIO_read(bio, buf, 1) == 0);
  CHECK(BIO_eof(bio) == 1);
  // Detached: the caller's buffer is never touched again.
  queueBioAttachSource(bio, nullptr);
  ext.append(std::vector<uint8_t>{9});
  CHECK(BIO_read(bio, buf, 1) == 0);
  CHECK(ext.size() == 1);
  BIO_free(bio);
}

TEST_CASE("queue_bio: an attached sink takes the queued bytes first, then every write",
          "[tls][bio]") {
  BIO* bio = newQueueBio();
  REQUIRE(bio != nullptr);
  REQUIRE(queueBioWrite(bio, std::vector<uint8_t>{1, 2}));
  sidecrypt::filters::Buffer ext;
  ext.append(std::vector<uint8_t>{0});  // what the caller queued before (the 0x03, say)
  queueBioAttachSink(bio, &ext);
  CHECK(queueBioPending(bio) == 0);
  const uint8_t more[] = {3, 4, 5};
  CHECK(BIO_write(bio, more, sizeof more) == 3);
  CHECK(queueBioPending(bio) == 0);
  const auto r = ext.readable();
  CHECK(std::vector<uint8_t>(r.begin(), r.end()) == std::vector<uint8_t>{0, 1, 2, 3, 4, 5});
  queueBioAttachSink(bio, nullptr);
  CHECK(BIO_write(bio, more, 1) == 1);  // detached: back into the queue
  CHECK(queueBioPending(bio) == 1);
  CHECK(ext.size() == 6);
  BIO_free(bio);
}
