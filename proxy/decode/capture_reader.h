#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <variant>

namespace sidecrypt::proxy::decode {

// One UDP datagram or TCP segment out of a capture file.
struct CapturedPacket {
  enum class Proto : uint8_t { Udp, Tcp };
  uint64_t frame = 0;  // 1-based record number, as Wireshark/tshark count
  double time = 0;     // seconds since the first record
  Proto proto = Proto::Udp;
  std::string src;  // "10.250.0.1:7946", "[fd00::1]:7946"
  std::string dst;
  uint32_t seq = 0;        // TCP
  uint8_t flags = 0;       // TCP flags (FIN 0x01, SYN 0x02, RST 0x04)
  bool truncated = false;  // the capture holds fewer bytes than the datagram/segment carried
  std::span<const uint8_t> payload;  // valid until the next call to next()
};

inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;

// Reads pcap and pcapng files through libpcap: Ethernet (with VLAN tags), Linux cooked (SLL,
// SLL2), raw IP, IPv4/IPv6 link types and BSD loopback; IPv4 and IPv6 (extension headers
// skipped); UDP and TCP. IP fragments are not reassembled (they are skipped with a note).
class CaptureReader {
 public:
  enum class Status : uint8_t { Packet, Skipped, End, Error };

  // Opens `path`; `filter` is an optional BPF expression (tcpdump syntax) applied by libpcap.
  static std::variant<std::unique_ptr<CaptureReader>, std::string> open(const std::string& path,
                                                                        const std::string& filter);
  ~CaptureReader();
  CaptureReader(const CaptureReader&) = delete;
  CaptureReader& operator=(const CaptureReader&) = delete;

  // Packet: `out` is filled. Skipped: a record that is not UDP/TCP over IP (`why` says what).
  // End: no more records. Error: the file is damaged (`why` is libpcap's message).
  Status next(CapturedPacket& out, std::string& why);
  const char* linkTypeName() const;

 private:
  struct Impl;
  explicit CaptureReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidecrypt::proxy::decode
