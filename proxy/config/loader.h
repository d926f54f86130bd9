#pragma once

// Internal to proxy/config: the Loader behind loadConfig(), shared by the files that read
// proxy.toml, one per family of sections:
//   config_loader.cc   the public API, the schema (every section and its keys), [agent],
//                      defaults and the checks that combine sections
//   loader_toml.cc     reading primitives: typed getters, error positions, did-you-mean,
//                      durations
//   load_gossip.cc     [gossip] (key, keyrings)
//   load_tls.cc        [tls], [[tls.datacenter]], [[listener]] (RPC and its TLS)
//   load_admin.cc      [admin], [metrics], [census], [log]
//   load_intercept.cc  [intercept], [[intercept.port]], member ports (the rules' inputs)
// Nothing outside proxy/config includes this header.

#include <toml++/toml.h>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/config/config_loader.h"

namespace sidecrypt::proxy::config_detail {

// A Consul datacenter name: letters, digits, '-' or '_' (config_loader.cc).
bool validDatacenter(const std::string& dc);
std::string lowered(std::string s);

class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

  std::vector<ConfigError> errors;
  Config cfg;

  // An error about a combination of settings, placed at the first of `keys` that the file has
  // (or at the section of the first key when none is set).
  void crossError(std::initializer_list<std::string_view> keys, std::string msg);

  void error(const toml::source_region& at, const std::string& key, std::string msg);
  void error(const toml::node& at, const std::string& key, std::string msg);

  // Reports keys not in `known`, with a suggestion where one is close.
  void checkKeys(const toml::table& tbl, const std::string& prefix,
                 const std::vector<std::string_view>& known);

  const toml::node* find(const toml::table& tbl, std::string_view key) { return tbl.get(key); }

  void getBool(const toml::table& tbl, const std::string& sec, std::string_view key, bool& out);
  bool getString(const toml::table& tbl, const std::string& sec, std::string_view key,
                 std::string& out);
  void getPath(const toml::table& tbl, const std::string& sec, std::string_view key,
               std::filesystem::path& out);
  std::optional<int64_t> getInt(const toml::table& tbl, const std::string& sec,
                                std::string_view key, int64_t lo, int64_t hi);
  // One table of an array of tables [[name]]: its node (for errors about the table as a whole),
  // the table, and its name in messages, "name[i]".
  struct TableAt {
    const toml::node& node;
    const toml::table& table;
    std::string sec;
  };
  // The tables of `n`, an array of tables [[name]], each with its keys checked against `keys`;
  // none, and one error, when `n` is anything else.
  std::vector<TableAt> tablesOf(const toml::node& n, const std::string& name,
                                const std::vector<std::string_view>& keys);

  // A Go-style duration string ("5s", "500ms", "1m30s") in milliseconds, when the key is present
  // and `valid` accepts it; otherwise the error is `expected`.
  std::optional<uint32_t> getDurationMs(const toml::table& tbl, const std::string& sec,
                                        std::string_view key, bool (*valid)(uint32_t ms),
                                        std::string_view expected);
  // An array of ports (1-65535); duplicates are dropped.
  void getPortList(const toml::table& tbl, const std::string& sec, std::string_view key,
                   std::vector<uint16_t>& out);

  // Matches a string against allowed spellings; reports the allowed set otherwise.
  template <typename E>
  bool getEnum(const toml::table& tbl, const std::string& sec, std::string_view key,
               const std::vector<std::pair<std::string_view, E>>& allowed, E& out) {
    std::string s;
    if (!getString(tbl, sec, key, s)) {
      return false;
    }
    for (const auto& [name, value] : allowed) {
      if (s == name) {
        out = value;
        return true;
      }
    }
    std::string list;
    for (const auto& [name, value] : allowed) {
      list += (list.empty() ? "" : ", ") + std::string(name);
    }
    error(*find(tbl, key), sec + "." + std::string(key),
          "unknown value '" + s + "'; expected one of: " + list);
    return false;
  }

  void loadAgent(const toml::table& t);
  void loadGossip(toml::table& t);
  void loadTls(const toml::table& t);
  void loadDatacenters(const toml::table& t);
  void loadIntercept(const toml::table& t, bool& ports_given);
  void loadAdmin(const toml::table& t);
  void loadMetrics(const toml::table& t);
  void loadListeners(const toml::node& n);
  void loadLog(const toml::table& t);
  void loadCensus(const toml::table& t);
  void loadRuntime(const toml::table& t);
  void applyDefaults(bool ports_given, const toml::table* intercept);
  void memberPortDefaults();
  void keepPositions() {
    for (const auto& [key, at] : positions_) {
      cfg.positions[key] = {at.begin.line, at.begin.column};
    }
  }

 private:
  std::string file_;
  std::map<std::string, toml::source_region> positions_;
};

}  // namespace sidecrypt::proxy::config_detail
