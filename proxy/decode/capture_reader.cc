#include "proxy/decode/capture_reader.h"

#include <arpa/inet.h>
#include <pcap/pcap.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstdio>

namespace sidecrypt::proxy::decode {

namespace {

constexpr uint16_t kEtherIpv4 = 0x0800;
constexpr uint16_t kEtherIpv6 = 0x86dd;
constexpr uint16_t kEtherVlan = 0x8100;
constexpr uint16_t kEtherQinQ = 0x88a8;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;

uint16_t be16(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}
uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

std::string endpoint(int family, const uint8_t* addr, uint16_t port) {
  std::array<char, INET6_ADDRSTRLEN> buf{};
  if (inet_ntop(family, addr, buf.data(), buf.size()) == nullptr) {
    return "?:" + std::to_string(port);
  }
  const std::string ip(buf.data());
  return (family == AF_INET6 ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
}

// The network-layer bytes of a link-layer frame, or nullopt-like empty span with `why`.
bool linkToIp(int dlt, std::span<const uint8_t> frame, std::span<const uint8_t>& ip,
              std::string& why) {
  size_t off = 0;
  uint16_t proto = 0;
  switch (dlt) {
    case DLT_EN10MB:
      if (frame.size() < 14) {
        why = "short Ethernet frame";
        return false;
      }
      proto = be16(frame.data() + 12);
      off = 14;
      while ((proto == kEtherVlan || proto == kEtherQinQ) && frame.size() >= off + 4) {
        proto = be16(frame.data() + off + 2);
        off += 4;
      }
      break;
    case DLT_LINUX_SLL:
      off = 16;
      proto = frame.size() >= off ? be16(frame.data() + 14) : 0;
      break;
    case DLT_LINUX_SLL2:
      off = 20;
      proto = frame.size() >= off ? be16(frame.data()) : 0;
      break;
    case DLT_NULL:
    case DLT_LOOP:
      off = 4;
      proto = frame.size() > off && (frame[off] >> 4) == 6 ? kEtherIpv6 : kEtherIpv4;
      break;
    default:  // DLT_RAW, DLT_IPV4, DLT_IPV6: the frame is the IP packet
      proto = !frame.empty() && (frame[0] >> 4) == 6 ? kEtherIpv6 : kEtherIpv4;
      break;
  }
  if (frame.size() < off) {
    why = "short link-layer header";
    return false;
  }
  if (proto != kEtherIpv4 && proto != kEtherIpv6) {
    std::array<char, 48> text{};
    std::snprintf(text.data(), text.size(), "not IP (link protocol 0x%04x)", proto);
    why = text.data();
    return false;
  }
  ip = frame.subspan(off);
  return true;
}

struct L4 {
  int family = AF_INET;
  const uint8_t* src = nullptr;
  const uint8_t* dst = nullptr;
  uint8_t proto = 0;
  std::span<const uint8_t> bytes;
  bool truncated = false;
};

bool ipv4(std::span<const uint8_t> ip, L4& out, std::string& why) {
  const size_t ihl = ip.size() >= 20 ? size_t{ip[0] & 0x0fu} * 4 : 0;
  if (ihl < 20 || ihl > ip.size()) {
    why = "malformed IPv4 header";
    return false;
  }
  const size_t total = be16(ip.data() + 2);
  if (total < ihl) {
    why = "malformed IPv4 total length";
    return false;
  }
  if ((be16(ip.data() + 6) & 0x3fff) != 0) {
    why = "IPv4 fragment (fragments are not reassembled)";
    return false;
  }
  out.family = AF_INET;
  out.proto = ip[9];
  out.src = ip.data() + 12;
  out.dst = ip.data() + 16;
  out.truncated = ip.size() < total;
  out.bytes = ip.subspan(ihl, std::min(total, ip.size()) - ihl);  // drops Ethernet padding
  return true;
}

bool ipv6(std::span<const uint8_t> ip, L4& out, std::string& why) {
  if (ip.size() < 40) {
    why = "malformed IPv6 header";
    return false;
  }
  const size_t end = 40 + size_t{be16(ip.data() + 4)};
  out.family = AF_INET6;
  out.src = ip.data() + 8;
  out.dst = ip.data() + 24;
  out.truncated = ip.size() < end;
  uint8_t next = ip[6];
  size_t off = 40;
  for (int i = 0; i < 8 && (next == 0 || next == 43 || next == 60 || next == 51); ++i) {
    if (ip.size() < off + 2) {
      why = "truncated IPv6 extension header";
      return false;
    }
    const size_t len = next == 51 ? (size_t{ip[off + 1]} + 2) * 4 : (size_t{ip[off + 1]} + 1) * 8;
    next = ip[off];
    off += len;
  }
  if (next == 44) {
    why = "IPv6 fragment (fragments are not reassembled)";
    return false;
  }
  const size_t stop = std::min(end, ip.size());
  if (off > stop) {
    why = "malformed IPv6 extension headers";
    return false;
  }
  out.proto = next;
  out.bytes = ip.subspan(off, stop - off);
  return true;
}

bool transport(const L4& l4, CapturedPacket& out, std::string& why) {
  const auto b = l4.bytes;
  if (l4.proto == kProtoUdp) {
    const size_t len = b.size() >= 8 ? be16(b.data() + 4) : 0;
    if (len < 8) {
      why = "malformed UDP header";
      return false;
    }
    out.proto = CapturedPacket::Proto::Udp;
    out.truncated = l4.truncated || b.size() < len;
    out.payload = b.subspan(8, std::min(len, b.size()) - 8);
  } else if (l4.proto == kProtoTcp) {
    const size_t doff = b.size() >= 20 ? size_t{static_cast<uint8_t>(b[12] >> 4)} * 4 : 0;
    if (doff < 20 || doff > b.size()) {
      why = "malformed TCP header";
      return false;
    }
    out.proto = CapturedPacket::Proto::Tcp;
    out.seq = be32(b.data() + 4);
    out.flags = b[13];
    out.truncated = l4.truncated;
    out.payload = b.subspan(doff);
  } else {
    why = "IP protocol " + std::to_string(l4.proto) + " (not UDP or TCP)";
    return false;
  }
  out.src = endpoint(l4.family, l4.src, be16(b.data()));
  out.dst = endpoint(l4.family, l4.dst, be16(b.data() + 2));
  return true;
}

bool supportedLinkType(int dlt) {
  switch (dlt) {
    case DLT_EN10MB:
    case DLT_LINUX_SLL:
    case DLT_LINUX_SLL2:
    case DLT_RAW:
    case DLT_IPV4:
    case DLT_IPV6:
    case DLT_NULL:
    case DLT_LOOP:
      return true;
    default:
      return false;
  }
}

}  // namespace

struct CaptureReader::Impl {
  pcap_t* pcap = nullptr;
  int dlt = 0;
  uint64_t frame = 0;
  bool have_first = false;
  double first = 0;
  ~Impl() {
    if (pcap != nullptr) {
      pcap_close(pcap);
    }
  }
};

CaptureReader::CaptureReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CaptureReader::~CaptureReader() = default;

std::variant<std::unique_ptr<CaptureReader>, std::string> CaptureReader::open(
    const std::string& path, const std::string& filter) {
  std::array<char, PCAP_ERRBUF_SIZE> err{};
  auto impl = std::make_unique<Impl>();
  impl->pcap = pcap_open_offline(path.c_str(), err.data());
  if (impl->pcap == nullptr) {
    return std::string(err.data());
  }
  impl->dlt = pcap_datalink(impl->pcap);
  if (!supportedLinkType(impl->dlt)) {
    const char* name = pcap_datalink_val_to_name(impl->dlt);
    return "unsupported link type " + std::string(name != nullptr ? name : "?") + " (" +
           std::to_string(impl->dlt) + ")";
  }
  if (!filter.empty()) {
    bpf_program prog{};
    if (pcap_compile(impl->pcap, &prog, filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
      return "bad --filter: " + std::string(pcap_geterr(impl->pcap));
    }
    const int rc = pcap_setfilter(impl->pcap, &prog);
    pcap_freecode(&prog);
    if (rc != 0) {
      return "bad --filter: " + std::string(pcap_geterr(impl->pcap));
    }
  }
  return std::unique_ptr<CaptureReader>(new CaptureReader(std::move(impl)));
}

const char* CaptureReader::linkTypeName() const {
  const char* name = pcap_datalink_val_to_name(impl_->dlt);
  return name != nullptr ? name : "?";
}

CaptureReader::Status CaptureReader::next(CapturedPacket& out, std::string& why) {
  pcap_pkthdr* hdr = nullptr;
  const u_char* data = nullptr;
  const int rc = pcap_next_ex(impl_->pcap, &hdr, &data);
  if (rc == PCAP_ERROR_BREAK) {
    return Status::End;
  }
  if (rc != 1) {
    why = pcap_geterr(impl_->pcap);
    return Status::Error;
  }
  out = CapturedPacket{};
  out.frame = ++impl_->frame;
  const double t = static_cast<double>(hdr->ts.tv_sec) + static_cast<double>(hdr->ts.tv_usec) / 1e6;
  if (!impl_->have_first) {
    impl_->have_first = true;
    impl_->first = t;
  }
  out.time = t - impl_->first;
  std::span<const uint8_t> ip;
  L4 l4;
  if (!linkToIp(impl_->dlt, {data, hdr->caplen}, ip, why)) {
    return Status::Skipped;
  }
  const int version = ip.empty() ? 0 : ip[0] >> 4;
  if (version != 4 && version != 6) {
    why = "not an IPv4/IPv6 packet";
    return Status::Skipped;
  }
  const bool ok = version == 6 ? ipv6(ip, l4, why) : ipv4(ip, l4, why);
  if (!ok || !transport(l4, out, why)) {
    return Status::Skipped;
  }
  return Status::Packet;
}

}  // namespace sidecrypt::proxy::decode
