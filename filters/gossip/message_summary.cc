#include "filters/gossip/message_summary.h"

#include <cstdio>
#include <string_view>
#include <utility>
#include <variant>

#include "filters/common/safe_text.h"
#include "filters/keyring/aead_key.h"
#include "filters/keyring/keyring_codec.h"

namespace sidecrypt::filters::gossip {

namespace {

std::string hostPort(std::span<const uint8_t> addr, uint16_t port) {
  const IpText ip = ipText(addr);
  std::string out = addr.size() == 16 ? "[" + std::string(ip.view()) + "]" : std::string(ip.view());
  return out + ":" + std::to_string(port);
}

// Wire text for a one-line summary: control characters, quotes, backslashes and bytes that are
// not valid UTF-8 as \xNN.
std::string printable(std::string_view s) {
  const std::string_view shown = s.substr(0, 200);
  std::string out;
  for (size_t i = 0; i < shown.size();) {
    const auto u = static_cast<unsigned char>(shown[i]);
    const size_t n = utf8SequenceAt(shown, i);
    if (n == 0 || u < 0x20 || u == 0x7f || u == '"' || u == '\\' ||
        (n == 2 && u == 0xc2 && static_cast<unsigned char>(shown[i + 1]) < 0xa0)) {
      std::array<char, 8> esc{};
      std::snprintf(esc.data(), esc.size(), "\\x%02x", u);
      out += esc.data();
      ++i;
    } else {
      out.append(shown.substr(i, n));
      i += n;
    }
  }
  return s.size() > 200 ? out + "..." : out;
}

std::string seconds(int64_t ns) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%gs", static_cast<double>(ns) / 1e9);
  return buf.data();
}

void keyDetail(const SerfMessage& s, std::string& out) {
  if (s.key_type == static_cast<int>(SerfType::KeyRequest)) {
    out += " keyRequest";
    if (!s.key.empty()) {
      out += " key " + keyring::fingerprintOf(s.key);
    }
  } else if (s.key_type == static_cast<int>(SerfType::KeyResponse)) {
    out += std::string(" keyResponse ") + (s.result ? "ok" : "failed");
    if (!s.message.empty()) {
      out += " \"" + printable(s.message) + "\"";
    }
    KeyList keys(s.keys);
    std::string_view k;
    std::string list;
    while (keys.next(k)) {
      list += (list.empty() ? "" : ",") + fingerprintOfBase64(k);
    }
    if (s.key_count > 0) {
      out += " keys [" + list + "]";
    }
    if (!s.primary_key.empty()) {
      out += " primary " + fingerprintOfBase64(s.primary_key);
    }
  }
}

}  // namespace

std::string fingerprintOfBase64(std::string_view base64) {
  auto decoded = keyring::decodeKey(base64);
  if (const auto* raw = std::get_if<SecretBytes>(&decoded)) {
    return keyring::fingerprintOf(raw->span());
  }
  return "?";
}

std::string describeSerf(const SerfMessage& s, bool detailed) {
  std::string out = "serf " + std::string(serfTypeName(s.type));
  if (detailed && !s.decoded) {
    return out + " (undecodable)";
  }
  if (s.type == static_cast<int>(SerfType::Relay)) {
    if (detailed) {
      out += " to " + printable(s.relay_dest_name) + " " +
             hostPort(s.relay_dest_addr, s.relay_dest_port) + ": " + serfTypeName(s.relayed_type);
    } else {
      return out;  // memberlist's summary shows the relay header only
    }
  }
  const int t = s.type == static_cast<int>(SerfType::Relay) ? s.relayed_type : s.type;
  if (!s.name.empty()) {
    out += " " + printable(s.name);
  }
  if (t == static_cast<int>(SerfType::QueryResponse) || !s.from.empty()) {
    out += " from " + printable(s.from);
  }
  if (!detailed) {
    return out;
  }
  if (!s.node.empty()) {
    out += " " + printable(s.node);
  }
  if (t == static_cast<int>(SerfType::Query) || t == static_cast<int>(SerfType::QueryResponse)) {
    out += " id " + std::to_string(s.id);
  }
  out += " ltime " + std::to_string(s.ltime);
  if (t == static_cast<int>(SerfType::Query)) {
    out += " by " + printable(s.source_node) + " " + hostPort(s.addr, s.port) + " timeout " +
           seconds(s.timeout_ns);
    if (s.flags != 0 || s.relay_factor != 0) {
      out += " flags " + std::to_string(s.flags) + " relay " + std::to_string(s.relay_factor);
    }
  }
  if (t == static_cast<int>(SerfType::PushPull)) {
    out += " members " + std::to_string(s.status_ltimes) + " left " +
           std::to_string(s.left_members) + " query ltime " + std::to_string(s.query_ltime);
  }
  keyDetail(s, out);
  return out;
}

MessageSummary::MessageSummary(Style style) : style_(style) {
  clear();
}

void MessageSummary::clear() {
  nodes_.assign(1, Node{});
  open_.assign(1, 0);
  last_leaf_ = kNone;
  key_material_ = false;
}

size_t MessageSummary::add(Node node) {
  nodes_.push_back(std::move(node));
  const size_t index = nodes_.size() - 1;
  nodes_[open_.back()].kids.push_back(index);
  return index;
}

void MessageSummary::enterLayer(const LayerInfo& layer) {
  Node n;
  n.name = messageTypeName(static_cast<uint8_t>(layer.type));
  n.depth = layer.depth;
  if (style_ == Style::Detailed && layer.type == MsgType::Compound) {
    n.name += "[" + std::to_string(layer.parts) + "]";
  }
  open_.push_back(add(std::move(n)));
  last_leaf_ = kNone;
}

void MessageSummary::leaveLayer(const LayerInfo& /*layer*/) {
  if (open_.size() > 1) {
    open_.pop_back();
  }
  last_leaf_ = kNone;
}

void MessageSummary::onMessage(const Message& m) {
  Node n;
  n.name = messageTypeName(static_cast<uint8_t>(m.type));
  n.depth = m.depth;
  n.detail = messageDetail(m);
  if (style_ == Style::Detailed && m.type == MsgType::PushPull && m.decoded) {
    n.tail = "; user state " + std::to_string(m.user_state.size()) + " B" +
             (m.has_serf ? " " + describeSerf(m.serf, true) : "");
  }
  key_material_ = key_material_ || (m.has_serf && m.serf.carriesKeyMaterial());
  last_leaf_ = add(std::move(n));
}

void MessageSummary::onNodeState(const NodeState& s) {
  if (style_ != Style::Detailed || last_leaf_ == kNone) {
    return;
  }
  Node& n = nodes_[last_leaf_];
  if (n.listed++ == kMaxListedNodes) {
    n.detail += ", ...";
    return;
  }
  if (n.listed > kMaxListedNodes) {
    return;
  }
  n.detail += (n.listed == 1 ? ": " : ", ") + printable(s.name) + " " + nodeStateName(s.state) +
              " " + hostPort(s.addr, s.port) + " inc " + std::to_string(s.incarnation);
}

void MessageSummary::onError(const WalkIssue& issue) {
  size_t target = last_leaf_;
  const Node& layer = nodes_[open_.back()];
  if (open_.size() > 1 && layer.depth == issue.depth) {
    target = open_.back();
  } else if (target == kNone || nodes_[target].depth != issue.depth) {
    Node n;  // a message that was never reported (unsupported type, empty, too deep)
    n.name = issue.error == WalkError::Empty ? "empty" : messageTypeName(issue.type);
    n.depth = issue.depth;
    target = add(std::move(n));
  }
  nodes_[target].errors += std::string("{ERROR ") + describe(issue.error) + "}";
}

std::string MessageSummary::messageDetail(const Message& m) const {
  const bool detailed = style_ == Style::Detailed;
  if (m.type == MsgType::User && m.has_serf && m.serf.type >= 0) {
    return describeSerf(m.serf, detailed);
  }
  if (!detailed || !m.decoded) {
    return {};
  }
  if (m.type == MsgType::User) {
    return std::to_string(m.payload.size()) + " B";
  }
  std::string seq = "#" + std::to_string(m.seq_no);
  const std::string from = m.source_node.empty() ? "" : " from " + printable(m.source_node);
  switch (m.type) {
    case MsgType::Ping:
      return seq + " " + printable(m.node) + from;
    case MsgType::IndirectPing:
      return seq + " " + printable(m.node) + " " + hostPort(m.addr, m.port) + from +
             (m.nack ? " nack" : "");
    case MsgType::AckResp:
    case MsgType::NackResp:
      return seq;
    case MsgType::Alive:
      return printable(m.node) + " " + hostPort(m.addr, m.port) + " inc " +
             std::to_string(m.incarnation);
    case MsgType::Suspect:
    case MsgType::Dead:
      return printable(m.node) + " inc " + std::to_string(m.incarnation) + " from " +
             printable(m.from);
    case MsgType::Err:
      return "\"" + printable(m.error) + "\"";
    case MsgType::Encrypt:
      return "L " + std::to_string(m.frame_len) + " v" + std::to_string(m.frame_version);
    case MsgType::PushPull:
      return std::string(m.join ? "join, " : "") + std::to_string(m.nodes) +
             (m.nodes == 1 ? " node" : " nodes");
    default:
      return {};
  }
}

std::string MessageSummary::render(size_t index) const {
  const Node& n = nodes_[index];
  const std::string inside = n.detail + n.tail;
  std::string name = n.name + (inside.empty() ? "" : "(" + inside + ")") + n.errors;
  if (n.kids.empty()) {
    return name;
  }
  std::string kids;
  for (const size_t k : n.kids) {
    kids += (kids.empty() ? "" : ", ") + render(k);
  }
  if (index == 0) {
    return n.kids.size() == 1 ? kids : "[" + kids + "]";
  }
  return name + (n.kids.size() == 1 ? " > " + kids : " > [" + kids + "]");
}

std::string MessageSummary::text() const {
  return render(0);
}

}  // namespace sidecrypt::filters::gossip
