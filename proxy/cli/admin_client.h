#pragma once

#include <optional>
#include <string>

namespace sidecrypt::proxy::cli {

struct AdminReply {
  int status = 0;  // 0: could not connect; `body` says why
  std::string body;
};

// One blocking HTTP/1.1 request to the admin endpoint ("127.0.0.1:9920"), bounded by a timeout.
AdminReply adminRequest(const std::string& listen, const std::string& method,
                        const std::string& path, int timeout_ms = 10'000);

// An HTTP reply read to the end: status code and body; nullopt when it has no status line or no
// end of headers.
std::optional<AdminReply> parseHttpReply(const std::string& raw);

// A query-string value with everything but RFC 3986 unreserved characters percent-encoded.
std::string urlEncode(const std::string& v);

// The admin address from a config file (admin.listen), or the default when it cannot be read.
std::string adminAddressFrom(const std::string& config_path);

}  // namespace sidecrypt::proxy::cli
