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
