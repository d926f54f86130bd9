#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "filters/rpc_tls/cert_inventory.h"
#include "filters/rpc_tls/first_byte.h"
#include "filters/rpc_tls/tls_context.h"

namespace sidecrypt::filters::rpc_tls {

// The TLS material and rollout flags a connection starts with (a reload builds new ones;
// established connections keep theirs, as Consul's per-handshake config does,
// docs/spec/consul-rpc-tls.md §2.6). Native TLS needs a certificate and a CA
// (docs/spec/consul-rpc-tls.md §1.4). Its own header so the runtime state can hold one without
// seeing the RPC processor.
struct RpcTlsSetup {
  TlsContextSharedPtr client;         // null unless verify_outgoing
  TlsContextSharedPtr server;         // null without cert_file/key_file
  TlsContextSharedPtr native_server;  // null unless cert + CA
  OutboundPolicy outbound;
  InboundPolicy inbound;
  std::string local_server_name;  // server.<dc>.<domain>
  // Consul's limits.rpc_handshake_timeout. Inbound the session applies it from the accept;
  // outbound it bounds the remote's TLS handshake, from the completed TCP connect.
  uint32_t handshake_timeout_ms = 5000;
  // Every certificate the contexts above loaded (leaf, intermediates, CAs), parsed from the same
  // file contents; never null once built. Swapped with the rest of the setup on reload.
  CertInventoryConstPtr certificates;
};
using RpcTlsSetupConstPtr = std::shared_ptr<const RpcTlsSetup>;

}  // namespace sidecrypt::filters::rpc_tls
