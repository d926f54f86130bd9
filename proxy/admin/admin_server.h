#pragma once

#include <uv.h>

#include <functional>
#include <string>
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

// The admin endpoint: a small HTTP/1.1 server on the loop (loopback by default), one request per
// connection (Connection: close). Requests are parsed with Debian's http-parser; bodies are
// ignored and capped. The handler maps (method, path) to a response.
class AdminServer {
 public:
  using Handler = std::function<HttpResponse(const std::string& method, const std::string& path)>;

  AdminServer(uv_loop_t* loop, Handler handler) : loop_(loop), handler_(std::move(handler)) {}
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  bool listen(const SocketAddress& addr, std::string& err);
  void close();
  uint64_t requests() const { return requests_; }

 private:
  struct Connection;
  static void onConnection(uv_stream_t* server, int status);

  uv_loop_t* loop_;
  Handler handler_;
  uv_tcp_t* server_ = nullptr;
  uint64_t requests_ = 0;
};

}  // namespace sidecrypt::proxy
