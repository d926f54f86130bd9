#include <catch2/catch.hpp>

#include "proxy/admin/admin_server.h"

using namespace sidecrypt::proxy;

namespace {
HttpRequest get(const std::string& host) {
  HttpRequest r;
  r.method = "GET";
  r.path = "/members";
  r.host = host;
  r.host_headers = 1;
  return r;
}

bool refused(const HttpRequest& r) {
  auto v = browserGuard(r);
  return v.has_value() && v->status == 403;
}
}  // namespace

TEST_CASE("admin guard: Host must be an IP literal or localhost", "[admin]") {
  for (const char* h : {"127.0.0.1:9920", "127.0.0.1", "[::1]:9920", "[::1]", "localhost:9920",
                        "LOCALHOST", "10.250.0.1:9920"}) {
    CHECK_FALSE(refused(get(h)));
  }
  for (const char* h :
       {"evil.example", "evil.example:9920", "127.0.0.1.nip.io:9920", "::1", "[::1]x", "[evil]:1",
        "127.0.0.1:99x", "", "localhost.evil.example", "127.1:9920"}) {
    CHECK(refused(get(h)));
  }
  HttpRequest none = get("");
  none.host_headers = 0;  // HTTP/1.0 without Host: no browser sends that
  CHECK_FALSE(refused(none));
  HttpRequest two = get("127.0.0.1:9920");
  two.host_headers = 2;
  CHECK(refused(two));
}

TEST_CASE("admin guard: cross-site Origin and Sec-Fetch-Site are refused", "[admin]") {
  HttpRequest r = get("127.0.0.1:9920");
  r.origin = "http://127.0.0.1:9920";
  CHECK_FALSE(refused(r));
  for (const char* o :
       {"http://evil.example", "null", "http://127.0.0.1:8080", "https://127.0.0.1:9920"}) {
    r.origin = o;
    CHECK(refused(r));
  }
  r.origin.clear();
  r.sec_fetch_site = "cross-site";
  CHECK(refused(r));
  r.sec_fetch_site = "same-site";
  CHECK(refused(r));
  r.sec_fetch_site = "none";
  CHECK_FALSE(refused(r));
}

TEST_CASE("admin guard: state changes need X-Sidecrypt or a JSON content type", "[admin]") {
  HttpRequest r = get("127.0.0.1:9920");
  r.method = "POST";
  r.path = "/reload";
  CHECK(refused(r));
  for (const char* ct : {"text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x", "application/jsonx"}) {
    r.content_type = ct;
    CHECK(refused(r));
  }
  r.content_type = "application/json";
  CHECK_FALSE(refused(r));
  r.content_type = "Application/JSON; charset=utf-8";
  CHECK_FALSE(refused(r));
  r.content_type = "text/plain";
  r.has_custom_header = true;
  CHECK_FALSE(refused(r));
  r.method = "OPTIONS";
  r.has_custom_header = false;
  CHECK(refused(r));
}
