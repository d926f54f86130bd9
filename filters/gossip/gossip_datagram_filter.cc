#include "filters/gossip/gossip_datagram_filter.h"

#include <string_view>
#include <utility>

namespace sidecrypt::filters::gossip {

namespace {

std::span<const uint8_t> labelBytes(const std::string& label) {
  return {reinterpret_cast<const uint8_t*>(label.data()), label.size()};
}

PacketResult drop(PacketReason reason, const char* detail = "") {
  PacketResult r;
  r.verdict = Verdict::Drop;
  r.reason = reason;
  r.detail = detail;
  return r;
}

PacketResult forward(PacketReason reason) {
  PacketResult r;
  r.verdict = Verdict::Forward;
  r.reason = reason;
  return r;
}

}  // namespace

const char* describe(PacketReason r) {
  switch (r) {
    case PacketReason::Sealed:
      return "sealed";
    case PacketReason::PlaintextPassed:
      return "plaintext passed (verify_outgoing off or no keys)";
    case PacketReason::Opened:
      return "opened";
    case PacketReason::PlaintextAccepted:
      return "plaintext accepted (verify_incoming off or no keys)";
    case PacketReason::OpenFailed:
      return "decrypt failed";
    case PacketReason::BadPadding:
      return "invalid PKCS#7 padding";
    case PacketReason::LabelMismatch:
      return "unacceptable label";
    case PacketReason::CrashShape:
      return "plaintext shape that crashes memberlist 0.2.2";
    case PacketReason::Malformed:
      return "malformed";
    case PacketReason::Oversize:
      return "oversize";
    case PacketReason::Internal:
      return "internal seal failure";
  }
  return "unknown";
}

GossipDatagramFilter::GossipDatagramFilter(keyring::KeySetConstSharedPtr keys,
                                           std::shared_ptr<const GossipPolicy> policy,
                                           NonceSource& nonces)
    : keys_(std::move(keys)),
      policy_(std::move(policy)),
      nonces_(nonces),
      inspector_(policy_->max_decompressed_packet) {}

PacketResult GossipDatagramFilter::onAgentPacket(Datagram& packet) {
  auto& c = stats_.agent_to_peer;
  const GossipPolicy& p = *policy_;
  const size_t label_len = labelHeaderLength(p.label);
  const bool seal = keys_ && !keys_->empty() && p.verify_outgoing;  // docs/spec/gossip-wire.md §4.3
  const size_t sealed_len = seal ? sealedLength(p.seal_version, packet.length) : packet.length;
  const size_t tail = sealed_len - packet.length - (seal ? kSealHeaderBytes : 0);
  if (packet.headroom() < label_len + (seal ? kSealHeaderBytes : 0) || packet.tailroom() < tail) {
    ++c.oversize;
    return drop(PacketReason::Oversize, "no headroom/tailroom to seal in place");
  }
  PacketResult r = forward(seal ? PacketReason::Sealed : PacketReason::PlaintextPassed);
  if (seal) {
    const std::span<const uint8_t> plain = packet.data();
    packet.prepend(kSealHeaderBytes);
    packet.extend(tail);
    // In place: the plaintext already sits right after the 13 header bytes
    // (docs/spec/gossip-wire.md §3.3 layout).
    if (sealPayload(keys_->primary(), p.seal_version, nonces_, plain, labelBytes(p.label),
                    packet.data()) != sealed_len) {
      return drop(PacketReason::Internal);
    }
    ++c.sealed;
  } else {
    ++c.plaintext_forwarded;
  }
  if (label_len > 0) {
    packet.prepend(label_len);  // HEAD: the label goes outside the encryption
                                // (docs/spec/gossip-wire.md §3.1 step 5)
    writeLabelHeader(p.label, packet.data());
  }
  return r;
}

bool GossipDatagramFilter::checkLabel(Datagram& packet, PacketResult& r) {
  // docs/spec/gossip-wire.md §3.6. Unlike HEAD, skip_inbound_label_check still accepts a matching
  // label header (HEAD rejects any header then, because its label-stripping transport already
  // removed one): a proxy migrating a fleet sees both forms at once.
  const GossipPolicy& p = *policy_;
  const LabelHeader h = parseLabelHeader(packet.data());
  if (h.status == LabelHeader::Status::Incomplete || h.status == LabelHeader::Status::Malformed) {
    ++stats_.peer_to_agent.label_mismatch;
    r = drop(PacketReason::LabelMismatch, "malformed label header");
    return false;
  }
  std::string_view got;
  if (h.status == LabelHeader::Status::Present) {
    got = std::string_view(reinterpret_cast<const char*>(h.label.data()), h.label.size());
  } else if (p.skip_inbound_label_check) {
    got = p.label;
  }
  if (got != p.label) {
    ++stats_.peer_to_agent.label_mismatch;
    r = drop(PacketReason::LabelMismatch, "discarding packet with unacceptable label");
    return false;
  }
  packet.trimFront(h.header_len);
  return true;
}

bool GossipDatagramFilter::inspectOrDrop(std::span<const uint8_t> plain, PacketResult& r) {
  if (!policy_->drop_crash_shapes) {
    return true;
  }
  const InspectResult ins = inspector_.inspect(plain);
  auto& c = stats_.peer_to_agent;
  switch (ins.verdict) {
    case InspectVerdict::Ok:
      return true;
    case InspectVerdict::CrashShape:
      ++c.crash_shape_dropped;
      r = drop(PacketReason::CrashShape, ins.reason);
      break;
    case InspectVerdict::Malformed:
      ++c.malformed;
      r = drop(PacketReason::Malformed, ins.reason);
      break;
    case InspectVerdict::TooLarge:
      ++c.oversize;
      r = drop(PacketReason::Oversize, ins.reason);
      break;
  }
  return false;
}

PacketResult GossipDatagramFilter::acceptPlaintext(Datagram& packet, bool shadow) {
  PacketResult r = forward(PacketReason::PlaintextAccepted);
  if (!inspectOrDrop(packet.data(), r)) {
    return r;
  }
  auto& c = stats_.peer_to_agent;
  ++c.plaintext_forwarded;
  if (shadow) {
    ++c.shadow_refused;
    r.shadow_refused = true;
  }
  return r;
}

PacketResult GossipDatagramFilter::onPeerPacket(Datagram& packet, Datagram& spare) {
  auto& c = stats_.peer_to_agent;
  PacketResult r;
  if (!checkLabel(packet, r)) {
    return r;
  }
  if (!keys_ || keys_->empty()) {
    // No keys: no decrypt attempt (docs/spec/gossip-wire.md §4.1).
    return acceptPlaintext(packet, false);
  }
  const GossipPolicy& p = *policy_;
  const std::span<uint8_t> out = spare.slot.subspan(spare.offset);
  const OpenResult o = openPayload(*keys_, packet.data(), labelBytes(p.label), out);
  if (o.ok()) {
    ++openedCounter(c, static_cast<size_t>(o.key_index));
    r = forward(PacketReason::Opened);
    r.key_index = o.key_index;
    if (!inspectOrDrop(out.first(o.length), r)) {
      r.key_index = o.key_index;
      return r;
    }
    spare.length = o.length;
    std::swap(packet, spare);
    return r;
  }
  ++c.open_failed;
  if (o.error == OpenError::BadPadding) {
    ++c.crash_shape_dropped;  // 0.2.2 would panic in pkcs7decode (docs/spec/gossip-wire.md §3.3)
    r = drop(PacketReason::BadPadding, "v0 padding invalid (0.2.2 panics)");
  } else if (o.error == OpenError::OutputTooSmall) {
    ++c.oversize;
    r = drop(PacketReason::Oversize, "spare slot too small");
  } else if (p.verify_incoming) {
    ++c.plaintext_refused;
    r = drop(PacketReason::OpenFailed, describe(o.error));
  } else {
    r = acceptPlaintext(packet, true);  // docs/spec/gossip-wire.md §4.1: processed as plaintext
  }
  r.open_error = o.error;
  r.key_index = o.key_index;
  return r;
}

}  // namespace sidecrypt::filters::gossip
