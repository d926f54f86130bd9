#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sidecrypt::filters {

// Text from the wire (member names, Serf names, messages, certificate names) is bytes: memberlist
// and Serf never check it is UTF-8. It is stored as received and made safe only where it is
// rendered, with one of these (docs/architecture.md, "Names are bytes").

// Length of the valid UTF-8 sequence starting at s[i] (1 to 4), or 0 when the byte there does not
// start one. The rules are Go's unicode/utf8 (and RFC 3629): no overlong forms, no surrogates,
// nothing above U+10FFFF.
size_t utf8SequenceAt(std::string_view s, size_t i);
bool isValidUtf8(std::string_view s);

// For JSON and Prometheus: valid UTF-8 passes unchanged; every byte that is not part of a valid
// sequence becomes U+FFFD. This is what Go's encoding/json writes for such a name, so a name reads
// the same in sidecrypt's output as in `serf members -format json` or Consul's HTTP API.
std::string utf8Safe(std::string_view s);

// For logs and terminals: one line of valid UTF-8. Control characters (C0, DEL, C1) and bytes
// that are not valid UTF-8 become \xNN (the byte value in hex); everything else passes.
// `max_bytes` limits the input shown ("..." marks a cut).
std::string escapeForLog(std::string_view s, size_t max_bytes = 256);

// A Prometheus text-format label value (exposition format 0.0.4): utf8Safe, then backslash,
// double quote and newline escaped as \\, \" and \n.
std::string promLabelValue(std::string_view s);

// Lower-case hex of the bytes.
std::string hexOf(std::string_view s);

}  // namespace sidecrypt::filters
