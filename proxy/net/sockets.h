#pragma once

#include <cstdint>
#include <string>

#include "proxy/net/address.h"

namespace sidecrypt::proxy {

// Socket recipes from docs/spec/interception.md. Every function returns a non-blocking,
// close-on-exec fd, or -1 with `err` set to a message that names the call and the errno text.

// A capture socket (TCP listener or UDP socket) on `addr`. `transparent` sets IP_TRANSPARENT /
// IPV6_TRANSPARENT (TPROXY needs it, docs/spec/interception.md §A.1 pitfall); UDP sockets also ask
// for the original destination (IP_RECVORIGDSTADDR / IPV6_RECVORIGDSTADDR,
// docs/spec/interception.md §B.1).
int openTcpListener(const SocketAddress& addr, bool transparent, std::string& err);
int openUdpCapture(const SocketAddress& addr, bool transparent, std::string& err);

// An outward TCP socket, not yet connected. `mark` is its SO_MARK (0: none). With `bind_to`
// valid, the socket is IP_TRANSPARENT and bound to that (non-local) address: inbound delivery
// with the peer's source address (docs/spec/interception.md §C.2).
int openTcpUpstream(int family, uint32_t mark, const SocketAddress* bind_to, std::string& err);

SocketAddress localAddress(int fd);
SocketAddress peerAddress(int fd);
// REDIRECT mode: the destination before NAT (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST,
// docs/spec/interception.md §A.2).
SocketAddress redirectOriginalDst(int fd);

std::string errnoMessage(const char* call);

}  // namespace sidecrypt::proxy
