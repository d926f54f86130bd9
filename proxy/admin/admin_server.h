#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "proxy/net/address.h"

namespace sidecrypt::proxy {

struct HttpResponse {
  HttpResponse() = default;
  HttpResponse(int status_code, std::string type, std::string text)
      : status(status_code), content_type(std::move(type)), body(std::move(text)) {}

  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Set for an answer that is not known yet (a reload building on a worker thread): the server
  // calls it with a function that sends the real response later, on the loop. Calling that
  // function after the client went away does nothing.
  using Respond = std::function<void(HttpResponse)>;
  std::function<void(Respond)> later;
};

// What the handler sees of one request: the method, the path (query stripped) and the few
// headers the browser guards look at (empty when absent).
struct HttpRequest {
  std::string method;
  std::string path;
  std::string query;  // after '?', still percent-encoded
  std::string host;
  std::string origin;
  std::string content_type;
  std::string sec_fetch_site;
  bool has_custom_header = false;  // X-Sidecrypt (any value)
  int host_headers = 0;            // how many Host headers the request carried
};

// Limits of one listener. A connection must deliver its whole request and take its whole
// response within `deadline_ms` of being accepted, or it is closed. At most `max_connections`
// are open at once: one more closes the oldest connection that has not finished its request
// (a slow or idle client), or, when every open one is already being answered, the new one.
struct HttpLimits {
  uint64_t deadline_ms = 5000;
  size_t max_connections = 64;
  // The admin endpoint's guards against browsers (DNS rebinding and cross-site requests);
  // see browserGuard(). Off for the read-only metrics listener.
  bool browser_guard = true;
};

struct HttpStats {
  uint64_t accepted = 0;
  uint64_t requests = 0;
  uint64_t timed_out = 0;  // closed by the deadline
  uint64_t shed = 0;       // closed because the listener was at max_connections
  uint64_t refused = 0;    // answered 403 by the browser guard
  uint64_t bad = 0;        // answered 400 (malformed, too large)
  size_t active = 0;
};

// Returns the refusal for a request a browser could have been made to send (nothing when the
// request is acceptable):
//  - Host must be an IP literal (with an optional port) or `localhost`: a DNS-rebinding page
//    sends its own domain name. A request without Host (HTTP/1.0 tools) passes: browsers
//    always send one. More than one Host header is refused.
//  - Origin, when present, must be http://<the Host header>; `null` and any other origin are
//    cross-site. Sec-Fetch-Site `cross-site` or `same-site` is refused too.
//  - A method other than GET/HEAD changes state and must carry `X-Sidecrypt: <anything>` or
//    `Content-Type: application/json`: neither can be sent cross-site without a CORS preflight,
//    and sidecrypt never approves one (it sends no Access-Control-* header).
std::optional<HttpResponse> browserGuard(const HttpRequest& r);

// The value of `name` in a query string ("a=1&b=x%20y"), percent- and '+'-decoded; nullopt when
// absent, "" for a bare `name`.
std::optional<std::string> queryParam(std::string_view query, std::string_view name);

// A small HTTP/1.1 server on the loop, one request per connection (Connection: close), used for
// the admin endpoint (loopback by default) and the read-only metrics listener. Requests are
// parsed with Debian's http-parser; bodies are ignored and capped.
class AdminServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest& request)>;

  AdminServer(uv_loop_t* loop, Handler handler, HttpLimits limits = {}, std::string name = "admin")
      : loop_(loop), handler_(std::move(handler)), limits_(limits), name_(std::move(name)) {}
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  bool listen(const SocketAddress& addr, std::string& err);
  // Closes the listener and every open connection.
  void close();
  uint64_t requests() const { return stats_.requests; }
  const HttpStats& stats() const { return stats_; }
  const std::string& name() const { return name_; }

 private:
  struct Connection;
  static void onConnection(uv_stream_t* server, int status);
  void shedOne(Connection* incoming);

  uv_loop_t* loop_;
  Handler handler_;
  HttpLimits limits_;
  std::string name_;
  uv_tcp_t* server_ = nullptr;
  std::list<Connection*> conns_;  // oldest first
  HttpStats stats_;
};

}  // namespace sidecrypt::proxy
