#pragma once

#include "filters/filter.h"

namespace sidecrypt::filters {

// Bytes pass unchanged (the "plaintext" rollout stage, or traffic that is already encrypted): the
// smallest StreamFilter, dialling at once and forwarding each side's FIN.
class PassthroughProcessor final : public StreamFilter {
 public:
  StreamVerdict start() override { return open(); }
  StreamVerdict onData(Side from, Buffer& in, bool end_stream, StreamIo& io) override {
    (from == Side::Agent ? io.to_peer : io.to_agent).move(in);
    StreamVerdict v = open();
    forwardEnd(from, in, end_stream, v);
    return v;
  }
  const char* name() const override { return "passthrough"; }

 private:
  static StreamVerdict open() {
    StreamVerdict v;
    v.dial = v.ready = true;
    return v;
  }
};

}  // namespace sidecrypt::filters
