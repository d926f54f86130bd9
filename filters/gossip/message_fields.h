#pragma once

// Internal to the message walker: msgpack body decoders for memberlist and Serf messages.

#include <cstdint>
#include <span>

#include "filters/gossip/message_walker.h"
#include "filters/gossip/msgpack.h"

namespace sidecrypt::filters::gossip::detail {

// Decodes one msgpack map into the Message fields named by its keys (docs/spec/gossip-wire.md §1.1:
// every memberlist body uses distinct key names with one meaning, so one decoder serves all types).
// Unknown keys are skipped, as go-msgpack does. False on malformed msgpack or a value of the
// wrong kind/range.
bool decodeMessageBody(MsgpackReader& r, Message& m);

// A stream user message header {UserMsgLen}.
bool decodeUserMsgHeader(MsgpackReader& r, uint64_t& user_msg_len);

// User data is opaque to memberlist; data that starts with a Serf type byte is decoded as a
// Serf message (docs/spec/gossip-wire.md §7) into m.serf. One that does not parse leaves
// serf.decoded false: that is not a memberlist error (another application may use the user
// channel).
void attachSerf(Message& m, std::span<const uint8_t> data);

// One pushNodeState map.
bool decodeNodeState(MsgpackReader& r, NodeState& s);

}  // namespace sidecrypt::filters::gossip::detail
