#include "filters/rpc_tls/queue_bio.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

namespace sidecrypt::filters::rpc_tls {

namespace {

struct Queue {
  std::vector<uint8_t> bytes;
  size_t head = 0;
  bool eof = false;
  Buffer* ext = nullptr;  // queueBioAttachSource / queueBioAttachSink

  size_t pending() const { return bytes.size() - head; }
  size_t take(uint8_t* out, size_t n) {
    n = std::min(n, pending());
    if (n == 0) {
      return 0;  // an empty vector's data() may be null: no memcpy at all
    }
    std::memcpy(out, bytes.data() + head, n);
    head += n;
    if (head == bytes.size()) {
      // Drained: the storage goes too, so an idle connection keeps no buffer here (issue 18:
      // the proxy attaches its own buffers, and these queues only ever see a handshake flight).
      std::vector<uint8_t>().swap(bytes);
      head = 0;
    } else if (head >= kCompactAfter && head * 2 >= bytes.size()) {
      bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(head));
      head = 0;
    }
    return n;
  }
  static constexpr size_t kCompactAfter = size_t{16} * 1024;
};

Queue* queueOf(BIO* bio) {
  return static_cast<Queue*>(BIO_get_data(bio));
}

int queueWrite(BIO* bio, const char* in, int len) {
  BIO_clear_retry_flags(bio);
  if (len <= 0) {
    return 0;
  }
  Queue* q = queueOf(bio);
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(in),
                                       static_cast<size_t>(len));
  if (q->ext != nullptr) {
    q->ext->append(bytes);
    return len;
  }
  try {
    q->bytes.insert(q->bytes.end(), bytes.begin(), bytes.end());
  } catch (const std::bad_alloc&) {
    return -1;
  }
  return len;
}

int queueRead(BIO* bio, char* out, int len) {
  BIO_clear_retry_flags(bio);
  Queue* q = queueOf(bio);
  if (len <= 0) {
    return 0;
  }
  if (q->pending() == 0 && q->ext != nullptr && !q->ext->empty()) {
    const size_t n = std::min(static_cast<size_t>(len), q->ext->size());
    std::memcpy(out, q->ext->readable().data(), n);
    q->ext->drain(n);
    return static_cast<int>(n);
  }
  if (q->pending() == 0) {
    if (q->eof) {
      return 0;
    }
    BIO_set_retry_read(bio);
    return -1;
  }
  return static_cast<int>(q->take(reinterpret_cast<uint8_t*>(out), static_cast<size_t>(len)));
}

long queueCtrl(BIO* bio, int cmd, long /*num*/, void* /*ptr*/) {
  Queue* q = queueOf(bio);
  switch (cmd) {
    case BIO_CTRL_PENDING:
      return static_cast<long>(std::min<size_t>(q->pending() + (q->ext ? q->ext->size() : 0),
                                                std::numeric_limits<long>::max()));
    case BIO_CTRL_EOF:
      return q->eof && q->pending() == 0 && (q->ext == nullptr || q->ext->empty()) ? 1 : 0;
    case BIO_CTRL_FLUSH:
      return 1;
    default:
      return 0;  // BIO_CTRL_WPENDING included: nothing is ever held back on the write side
  }
}

int queueCreate(BIO* bio) {
  auto* q = new (std::nothrow) Queue;
  if (q == nullptr) {
    return 0;
  }
  BIO_set_data(bio, q);
  BIO_set_init(bio, 1);
  return 1;
}

int queueDestroy(BIO* bio) {
  delete queueOf(bio);
  BIO_set_data(bio, nullptr);
  return 1;
}

const BIO_METHOD* queueMethod() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sidecrypt queue");
    if (m != nullptr) {
      BIO_meth_set_write(m, queueWrite);
      BIO_meth_set_read(m, queueRead);
      BIO_meth_set_ctrl(m, queueCtrl);
      BIO_meth_set_create(m, queueCreate);
      BIO_meth_set_destroy(m, queueDestroy);
    }
    return m;
  }();
  return method;
}

}  // namespace

BIO* newQueueBio() {
  const BIO_METHOD* m = queueMethod();
  return m == nullptr ? nullptr : BIO_new(m);
}

size_t queueBioPending(BIO* bio) {
  return queueOf(bio)->pending();
}

bool queueBioWrite(BIO* bio, std::span<const uint8_t> bytes) {
  if (bytes.empty()) {
    return true;
  }
  Queue* q = queueOf(bio);
  try {
    q->bytes.insert(q->bytes.end(), bytes.begin(), bytes.end());
  } catch (const std::bad_alloc&) {
    return false;
  }
  return true;
}

size_t queueBioRead(BIO* bio, std::span<uint8_t> out) {
  return queueOf(bio)->take(out.data(), out.size());
}

void queueBioSetEof(BIO* bio) {
  queueOf(bio)->eof = true;
}

void queueBioAttachSource(BIO* bio, Buffer* ext) {
  queueOf(bio)->ext = ext;
}

void queueBioAttachSink(BIO* bio, Buffer* ext) {
  Queue* q = queueOf(bio);
  q->ext = ext;
  if (ext != nullptr && q->pending() > 0) {
    const size_t n = q->pending();
    q->take(ext->reserve(n).data(), n);
    ext->commit(n);
  }
}

}  // namespace sidecrypt::filters::rpc_tls
