#include "proxy/admin/admin_server.h"

#include <http_parser.h>

#include <cstring>
#include <memory>

namespace sidecrypt::proxy {

namespace {
constexpr size_t kMaxRequestBytes = size_t{16} * 1024;

const char* statusText(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}
}  // namespace

struct AdminServer::Connection {
  AdminServer* server = nullptr;
  uv_tcp_t tcp{};
  uv_write_t wreq{};
  http_parser parser{};
  http_parser_settings settings{};
  std::string url;
  std::string response;
  size_t received = 0;
  bool responded = false;
  bool deferred = false;  // a handler will answer later (HttpResponse::later)
  // Cleared when the connection closes, so a late answer for a client that left is dropped.
  std::shared_ptr<Connection*> alive = std::make_shared<Connection*>(this);

  void respond(const HttpResponse& r) {
    if (responded) {
      return;
    }
    if (r.later) {
      deferred = true;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
      r.later([weak = std::weak_ptr<Connection*>(alive)](HttpResponse late) {
        if (auto token = weak.lock(); token && *token != nullptr) {
          late.later = nullptr;
          (*token)->respond(late);
        }
      });
      return;
    }
    responded = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
    response = "HTTP/1.1 " + std::to_string(r.status) + " " + statusText(r.status) +
               "\r\nContent-Type: " + r.content_type +
               "\r\nContent-Length: " + std::to_string(r.body.size()) +
               "\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n" + r.body;
    uv_buf_t buf = uv_buf_init(response.data(), static_cast<unsigned>(response.size()));
    wreq.data = this;
    if (uv_write(&wreq, reinterpret_cast<uv_stream_t*>(&tcp), &buf, 1,
                 [](uv_write_t* req, int) { static_cast<Connection*>(req->data)->close(); }) != 0) {
      close();
    }
  }

  void close() {
    *alive = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp),
             [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
  }
};

AdminServer::~AdminServer() {
  close();
}

bool AdminServer::listen(const SocketAddress& addr, std::string& err) {
  server_ = new uv_tcp_t;
  uv_tcp_init(loop_, server_);
  server_->data = this;
  int rc = uv_tcp_bind(server_, addr.sa(), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(server_), 64, &AdminServer::onConnection);
  }
  if (rc != 0) {
    err = "admin listener " + addr.toString() + ": " + uv_strerror(rc);
    close();
    return false;
  }
  return true;
}

void AdminServer::close() {
  if (server_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(server_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    server_ = nullptr;
  }
}

void AdminServer::onConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<AdminServer*>(server->data);
  if (status < 0) {
    return;
  }
  auto* c = new Connection;
  c->server = self;
  uv_tcp_init(self->loop_, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    c->close();
    return;
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  http_parser_settings_init(&c->settings);
  c->settings.on_url = [](http_parser* p, const char* at, size_t len) {
    static_cast<Connection*>(p->data)->url.append(at, len);
    return 0;
  };
  c->settings.on_message_complete = [](http_parser* p) {
    auto* conn = static_cast<Connection*>(p->data);
    ++conn->server->requests_;
    std::string path = conn->url.substr(0, conn->url.find('?'));
    conn->respond(
        conn->server->handler_(http_method_str(static_cast<http_method>(p->method)), path));
    return 0;
  };
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static thread_local char scratch[4096];
        *buf = uv_buf_init(scratch, sizeof scratch);
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* conn = static_cast<Connection*>(s->data);
        if (conn->responded || conn->deferred) {
          return;
        }
        if (nread < 0) {
          conn->close();
          return;
        }
        conn->received += static_cast<size_t>(nread);
        const size_t used = http_parser_execute(&conn->parser, &conn->settings, buf->base,
                                                static_cast<size_t>(nread));
        if (conn->responded || conn->deferred) {
          return;
        }
        if (used != static_cast<size_t>(nread) || conn->received > kMaxRequestBytes ||
            HTTP_PARSER_ERRNO(&conn->parser) != HPE_OK) {
          conn->respond({400, "text/plain", "bad request\n"});
        }
      });
}

}  // namespace sidecrypt::proxy
