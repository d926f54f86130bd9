// Reading proxy.toml values: typed getters that report file, line, column and key, unknown keys
// with did-you-mean, and Go-style durations.

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "proxy/config/config_loader.h"
#include "proxy/config/did_you_mean.h"
#include "proxy/config/loader.h"

namespace sidecrypt::proxy {

std::string ConfigError::format() const {
  std::string out = where.file;
  if (where.line != 0) {
    out += ":" + std::to_string(where.line) + ":" + std::to_string(where.column);
  }
  out += ": ";
  if (!where.key.empty()) {
    out += where.key + ": ";
  }
  return out + message;
}

std::optional<uint32_t> parseDurationMs(std::string_view s) {
  // Go duration subset Consul users write: "5s", "500ms", "1m", "1m30s".
  uint64_t total = 0;
  size_t i = 0;
  if (s.empty()) {
    return std::nullopt;
  }
  while (i < s.size()) {
    uint64_t n = 0;
    size_t digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) != 0) {
      n = n * 10 + static_cast<uint64_t>(s[i] - '0');
      if (n > 1'000'000'000) {
        return std::nullopt;
      }
      ++i;
      ++digits;
    }
    if (digits == 0) {
      return std::nullopt;
    }
    std::string_view rest = s.substr(i);
    if (rest.starts_with("ms")) {
      total += n;
      i += 2;
    } else if (rest.starts_with("s")) {
      total += n * 1000;
      i += 1;
    } else if (rest.starts_with("m")) {
      total += n * 60'000;
      i += 1;
    } else if (rest.starts_with("h")) {
      total += n * 3'600'000;
      i += 1;
    } else {
      return std::nullopt;
    }
  }
  if (total > UINT32_MAX) {
    return std::nullopt;
  }
  return static_cast<uint32_t>(total);
}

}  // namespace sidecrypt::proxy

namespace sidecrypt::proxy::config_detail {

void Loader::crossError(std::initializer_list<std::string_view> keys, std::string msg) {
  for (auto k : keys) {
    auto it = positions_.find(std::string(k));
    if (it != positions_.end()) {
      error(it->second, std::string(k), std::move(msg));
      return;
    }
  }
  std::string first(*keys.begin());
  auto sec = positions_.find(first.substr(0, first.find('.')));
  errors.push_back({{file_, sec == positions_.end() ? 0 : sec->second.begin.line,
                     sec == positions_.end() ? 0 : sec->second.begin.column, first},
                    std::move(msg)});
}

void Loader::error(const toml::source_region& at, const std::string& key, std::string msg) {
  errors.push_back({{file_, at.begin.line, at.begin.column, key}, std::move(msg)});
}
void Loader::error(const toml::node& at, const std::string& key, std::string msg) {
  error(at.source(), key, std::move(msg));
}

void Loader::checkKeys(const toml::table& tbl, const std::string& prefix,
                       const std::vector<std::string_view>& known) {
  for (auto&& [k, v] : tbl) {
    const std::string name(k.str());
    positions_[prefix.empty() ? name : prefix + "." + name] = k.source();
    if (std::find(known.begin(), known.end(), name) != known.end()) {
      continue;
    }
    std::string msg = "unknown key";
    if (auto hint = didYouMean(name, known)) {
      msg += "; did you mean '" + std::string(*hint) + "'?";
    }
    error(k.source(), prefix.empty() ? name : prefix + "." + name, msg);
  }
}

void Loader::getBool(const toml::table& tbl, const std::string& sec, std::string_view key,
                     bool& out) {
  if (const auto* n = find(tbl, key)) {
    if (auto v = n->value<bool>(); v && n->is_boolean()) {
      out = *v;
    } else {
      error(*n, sec + "." + std::string(key), "expected true or false");
    }
  }
}

bool Loader::getString(const toml::table& tbl, const std::string& sec, std::string_view key,
                       std::string& out) {
  if (const auto* n = find(tbl, key)) {
    if (n->is_string()) {
      out = n->as_string()->get();
      return true;
    }
    error(*n, sec + "." + std::string(key), "expected a string");
  }
  return false;
}

void Loader::getPath(const toml::table& tbl, const std::string& sec, std::string_view key,
                     std::filesystem::path& out) {
  std::string s;
  if (getString(tbl, sec, key, s)) {
    if (s.empty()) {
      error(*find(tbl, key), sec + "." + std::string(key), "path must not be empty");
    } else {
      out = s;
    }
  }
}

std::optional<int64_t> Loader::getInt(const toml::table& tbl, const std::string& sec,
                                      std::string_view key, int64_t lo, int64_t hi) {
  const auto* n = find(tbl, key);
  if (n == nullptr) {
    return std::nullopt;
  }
  if (!n->is_integer()) {
    error(*n, sec + "." + std::string(key), "expected an integer");
    return std::nullopt;
  }
  int64_t v = n->as_integer()->get();
  if (v < lo || v > hi) {
    error(*n, sec + "." + std::string(key),
          "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
              std::to_string(v));
    return std::nullopt;
  }
  return v;
}

std::optional<uint32_t> Loader::getDurationMs(const toml::table& tbl, const std::string& sec,
                                              std::string_view key, bool (*valid)(uint32_t ms),
                                              std::string_view expected) {
  const auto* n = find(tbl, key);
  if (n == nullptr) {
    return std::nullopt;
  }
  std::optional<uint32_t> ms;
  if (n->is_string()) {
    ms = parseDurationMs(n->as_string()->get());
  }
  if (!ms || !valid(*ms)) {
    error(*n, sec + "." + std::string(key), std::string(expected));
    return std::nullopt;
  }
  return ms;
}

std::vector<Loader::TableAt> Loader::tablesOf(const toml::node& n, const std::string& name,
                                              const std::vector<std::string_view>& keys) {
  std::vector<TableAt> out;
  if (!n.is_array_of_tables()) {
    error(n, name, "expected [[" + name + "]] tables");
    return out;
  }
  size_t i = 0;
  for (const auto& e : *n.as_array()) {
    out.push_back({e, *e.as_table(), name + "[" + std::to_string(i++) + "]"});
    checkKeys(out.back().table, out.back().sec, keys);
  }
  return out;
}

void Loader::getPortList(const toml::table& tbl, const std::string& sec, std::string_view key,
                         std::vector<uint16_t>& out) {
  const auto* n = find(tbl, key);
  if (n == nullptr) {
    return;
  }
  const std::string name = sec + "." + std::string(key);
  if (!n->is_array()) {
    error(*n, name, "expected an array of ports, e.g. [7946, 7947]");
    return;
  }
  for (const auto& e : *n->as_array()) {
    const auto v = e.value<int64_t>();
    if (!e.is_integer() || !v || *v < 1 || *v > 65535) {
      error(e, name, "expected ports between 1 and 65535");
      continue;
    }
    const auto port = static_cast<uint16_t>(*v);
    if (std::find(out.begin(), out.end(), port) == out.end()) {
      out.push_back(port);
    }
  }
}

}  // namespace sidecrypt::proxy::config_detail
