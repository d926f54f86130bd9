#include "proxy/admin/admin_server.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <exception>
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
    case 403:
      return "Forbidden";
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

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) {
    return {};
  }
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

bool allDigits(const std::string& s) {
  return !s.empty() && s.size() <= 5 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

// An IP literal ("127.0.0.1", "[::1]") or `localhost`, each with an optional ":port".
bool hostIsLiteral(const std::string& host) {
  std::string ip;
  std::string port;
  if (!host.empty() && host.front() == '[') {
    const size_t end = host.find(']');
    if (end == std::string::npos) {
      return false;
    }
    ip = host.substr(1, end - 1);
    const std::string rest = host.substr(end + 1);
    if (!rest.empty() && (rest.front() != ':' || !allDigits(rest.substr(1)))) {
      return false;
    }
    in6_addr a6{};
    return inet_pton(AF_INET6, ip.c_str(), &a6) == 1;
  }
  const size_t colon = host.find(':');
  if (colon != std::string::npos) {
    if (host.find(':', colon + 1) != std::string::npos || !allDigits(host.substr(colon + 1))) {
      return false;
    }
    ip = host.substr(0, colon);
  } else {
    ip = host;
  }
  in_addr a4{};
  return inet_pton(AF_INET, ip.c_str(), &a4) == 1 || lower(ip) == "localhost";
}

HttpResponse forbidden(const std::string& why) {
  return {403, "text/plain", why + "\n"};
}
}  // namespace

std::optional<std::string> queryParam(std::string_view query, std::string_view name) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    c = static_cast<char>(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name) {
      continue;
    }
    std::string out;
    const std::string_view v =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '+') {
        out += ' ';
      } else if (v[i] == '%' && i + 2 < v.size() && hex(v[i + 1]) >= 0 && hex(v[i + 2]) >= 0) {
        out += static_cast<char>(hex(v[i + 1]) * 16 + hex(v[i + 2]));
        i += 2;
      } else {
        out += v[i];
      }
    }
    return out;
  }
  return std::nullopt;
}

std::optional<HttpResponse> browserGuard(const HttpRequest& r) {
  if (r.host_headers > 1) {
    return forbidden("more than one Host header");
  }
  if (r.host_headers == 1 && !hostIsLiteral(r.host)) {
    return forbidden("Host must be an IP address or localhost (DNS-rebinding guard), not " +
                     r.host.substr(0, 64));
  }
  const std::string site = lower(r.sec_fetch_site);
  if (site == "cross-site" || site == "same-site") {
    return forbidden("cross-site requests are refused");
  }
  if (!r.origin.empty() && (r.host_headers != 1 || lower(r.origin) != "http://" + lower(r.host))) {
    return forbidden("cross-origin requests are refused (Origin " + r.origin.substr(0, 64) + ")");
  }
  if (r.method != "GET" && r.method != "HEAD") {
    const std::string ct = lower(r.content_type);
    const bool json =
        ct.rfind("application/json", 0) == 0 && (ct.size() == 16 || ct[16] == ';' || ct[16] == ' ');
    if (!r.has_custom_header && !json) {
      return forbidden(
          "requests that change state need the header `X-Sidecrypt: 1` or "
          "`Content-Type: application/json` (the sidecrypt CLI sends them)");
    }
  }
  return std::nullopt;
}

struct AdminServer::Connection {
  AdminServer* server = nullptr;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_write_t wreq{};
  http_parser parser{};
  std::list<Connection*>::iterator pos;
  HttpRequest request;
  std::string url;
  std::string field;
  std::string value;
  bool in_value = false;
  std::string response;
  size_t received = 0;
  int open_handles = 2;
  bool responded = false;
  bool deferred = false;  // a handler will answer later (HttpResponse::later)
  bool closing = false;
  // Cleared when the connection closes, so a late answer for a client that left is dropped.
  std::shared_ptr<Connection*> alive = std::make_shared<Connection*>(this);

  void commitHeader() {
    if (field.empty()) {
      return;
    }
    const std::string name = lower(field);
    std::string v = trim(value);
    if (name == "host") {
      ++request.host_headers;
      request.host = std::move(v);
    } else if (name == "origin") {
      request.origin = std::move(v);
    } else if (name == "content-type") {
      request.content_type = std::move(v);
    } else if (name == "sec-fetch-site") {
      request.sec_fetch_site = std::move(v);
    } else if (name == "x-sidecrypt") {
      request.has_custom_header = true;
    }
    field.clear();
    value.clear();
    in_value = false;
  }

  // The deadline: from accept to the end of the request, and again from a late answer to the
  // end of its write. While a handler works on a deferred answer (a reload) there is none: the
  // handler bounds that itself.
  void startDeadline() {
    uv_timer_start(
        &timer,
        [](uv_timer_t* t) {
          auto* conn = static_cast<Connection*>(t->data);
          ++conn->server->stats_.timed_out;
          conn->close();
        },
        server->limits_.deadline_ms, 0);
  }

  void respond(const HttpResponse& r) {
    if (responded || closing) {
      return;
    }
    if (r.later) {
      deferred = true;
      uv_timer_stop(&timer);
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
      r.later([weak = std::weak_ptr<Connection*>(alive)](HttpResponse late) {
        if (auto token = weak.lock(); token && *token != nullptr) {
          late.later = nullptr;
          (*token)->respond(late);
        }
      });
      return;
    }
    if (deferred) {
      startDeadline();
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
    if (closing) {
      return;
    }
    closing = true;
    *alive = nullptr;
    server->conns_.erase(pos);
    --server->stats_.active;
    uv_timer_stop(&timer);
    auto done = [](uv_handle_t* h) {
      auto* c = static_cast<Connection*>(h->data);
      if (--c->open_handles == 0) {
        delete c;
      }
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), done);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), done);
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
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(server_), 128, &AdminServer::onConnection);
  }
  if (rc != 0) {
    err = name_ + " listener " + addr.toString() + ": " + uv_strerror(rc);
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
  while (!conns_.empty()) {
    conns_.front()->close();
  }
}

void AdminServer::shedOne(Connection* incoming) {
  ++stats_.shed;
  for (Connection* c : conns_) {
    if (c != incoming && !c->responded && !c->deferred) {
      c->close();
      return;
    }
  }
  incoming->close();
}

void AdminServer::onConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<AdminServer*>(server->data);
  if (status < 0) {
    return;
  }
  static const http_parser_settings kSettings = [] {
    http_parser_settings st{};
    http_parser_settings_init(&st);
    st.on_url = [](http_parser* p, const char* at, size_t len) {
      static_cast<Connection*>(p->data)->url.append(at, len);
      return 0;
    };
    st.on_header_field = [](http_parser* p, const char* at, size_t len) {
      auto* conn = static_cast<Connection*>(p->data);
      if (conn->in_value) {
        conn->commitHeader();
      }
      conn->field.append(at, len);
      return 0;
    };
    st.on_header_value = [](http_parser* p, const char* at, size_t len) {
      auto* conn = static_cast<Connection*>(p->data);
      conn->in_value = true;
      conn->value.append(at, len);
      return 0;
    };
    st.on_headers_complete = [](http_parser* p) {
      static_cast<Connection*>(p->data)->commitHeader();
      return 0;
    };
    st.on_message_complete = [](http_parser* p) {
      auto* conn = static_cast<Connection*>(p->data);
      AdminServer* srv = conn->server;
      ++srv->stats_.requests;
      conn->request.method = http_method_str(static_cast<http_method>(p->method));
      const size_t q = conn->url.find('?');
      conn->request.path = conn->url.substr(0, q);
      conn->request.query = q == std::string::npos ? "" : conn->url.substr(q + 1);
      if (srv->limits_.browser_guard) {
        if (auto refusal = browserGuard(conn->request)) {
          ++srv->stats_.refused;
          conn->respond(*refusal);
          return 0;
        }
      }
      // An exception must not unwind through libuv (that aborts the proxy, and with it the
      // agent's traffic): a renderer that throws answers 500 and the proxy keeps running.
      HttpResponse r;
      try {
        r = srv->handler_(conn->request);
      } catch (const std::exception& e) {
        spdlog::error("admin {}: {}", conn->request.path, e.what());
        r = {500, "text/plain", "internal error\n"};
      }
      conn->respond(r);
      return 0;
    };
    return st;
  }();

  auto* c = new Connection;
  c->server = self;
  uv_tcp_init(self->loop_, &c->tcp);
  uv_timer_init(self->loop_, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->pos = self->conns_.insert(self->conns_.end(), c);
  ++self->stats_.active;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    c->close();
    return;
  }
  ++self->stats_.accepted;
  if (self->stats_.active > self->limits_.max_connections) {
    self->shedOne(c);
    if (c->closing) {
      return;
    }
  }
  c->startDeadline();
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static thread_local char scratch[4096];
        *buf = uv_buf_init(scratch, sizeof scratch);
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* conn = static_cast<Connection*>(s->data);
        if (conn->responded || conn->deferred || conn->closing) {
          return;
        }
        if (nread < 0) {
          conn->close();
          return;
        }
        conn->received += static_cast<size_t>(nread);
        const size_t used =
            http_parser_execute(&conn->parser, &kSettings, buf->base, static_cast<size_t>(nread));
        if (conn->responded || conn->deferred || conn->closing) {
          return;
        }
        if (used != static_cast<size_t>(nread) || conn->received > kMaxRequestBytes ||
            HTTP_PARSER_ERRNO(&conn->parser) != HPE_OK) {
          ++conn->server->stats_.bad;
          conn->respond({400, "text/plain", "bad request\n"});
        }
      });
}

}  // namespace sidecrypt::proxy
