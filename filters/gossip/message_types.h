#pragma once

#include <cstdint>

namespace sidecrypt::filters::gossip {

// memberlist's message type bytes (docs/spec/gossip-wire.md §1), the one definition:
// MESSAGE(enumerator, byte, Go name as the vectors spell it).
#define SIDECRYPT_MEMBERLIST_MESSAGE_TYPES(MESSAGE) \
  MESSAGE(Ping, 0, "ping")                          \
  MESSAGE(IndirectPing, 1, "indirectPing")          \
  MESSAGE(AckResp, 2, "ackResp")                    \
  MESSAGE(Suspect, 3, "suspect")                    \
  MESSAGE(Alive, 4, "alive")                        \
  MESSAGE(Dead, 5, "dead")                          \
  MESSAGE(PushPull, 6, "pushPull")                  \
  MESSAGE(Compound, 7, "compound")                  \
  MESSAGE(User, 8, "user")                          \
  MESSAGE(Compress, 9, "compress")                  \
  MESSAGE(Encrypt, 10, "encrypt")                   \
  MESSAGE(NackResp, 11, "nackResp")                 \
  MESSAGE(HasCrc, 12, "hasCrc")                     \
  MESSAGE(Err, 13, "err")                           \
  MESSAGE(HasLabel, 244, "hasLabel")

enum class MsgType : uint8_t {
#define SIDECRYPT_MEMBERLIST_MESSAGE_ENUM(name, byte, text) name = (byte),
  SIDECRYPT_MEMBERLIST_MESSAGE_TYPES(SIDECRYPT_MEMBERLIST_MESSAGE_ENUM)
#undef SIDECRYPT_MEMBERLIST_MESSAGE_ENUM
};

// The type byte of `t`, for code that compares raw bytes.
constexpr uint8_t typeByte(MsgType t) {
  return static_cast<uint8_t>(t);
}

// memberlist's Go name of a type byte ("ping", "ackResp", "hasCrc", ...); "unknown" for anything
// else.
constexpr const char* messageTypeName(uint8_t type) {
  switch (type) {
#define SIDECRYPT_MEMBERLIST_MESSAGE_NAME(name, byte, text) \
  case byte:                                                \
    return text;
    SIDECRYPT_MEMBERLIST_MESSAGE_TYPES(SIDECRYPT_MEMBERLIST_MESSAGE_NAME)
#undef SIDECRYPT_MEMBERLIST_MESSAGE_NAME
    default:
      return "unknown";
  }
}

}  // namespace sidecrypt::filters::gossip
