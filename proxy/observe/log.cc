#include "proxy/observe/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

#include "filters/common/safe_text.h"

namespace sidecrypt::proxy {

namespace {

// Log messages carry wire text (node names, Serf names, query sources): each line must stay one
// line of valid UTF-8 whatever a peer sends.

// %* in the JSON pattern: the message, escaped as a JSON string body; bytes that are not valid
// UTF-8 become \ufffd (as in the JSON the admin endpoint serves).
class JsonEscapedMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& /*tm*/,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    const std::string_view text(msg.payload.data(), msg.payload.size());
    for (size_t i = 0; i < text.size();) {
      const char c = text[i];
      const auto u = static_cast<unsigned char>(c);
      const size_t n = filters::utf8SequenceAt(text, i);
      if (n == 0) {
        static constexpr std::string_view kReplacement = "\\ufffd";
        dest.append(kReplacement.data(), kReplacement.data() + kReplacement.size());
        ++i;
        continue;
      }
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(c);
      } else if (u < 0x20) {
        const char esc[] = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 0xf]};
        dest.append(esc, esc + sizeof esc);
      } else {
        dest.append(text.data() + i, text.data() + i + n);
      }
      i += n;
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

// %* in the text pattern: control characters and invalid UTF-8 as \xNN (filters::escapeForLog).
class TextEscapedMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& /*tm*/,
              spdlog::memory_buf_t& dest) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    const std::string safe = filters::escapeForLog(text, text.size());
    dest.append(safe.data(), safe.data() + safe.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<TextEscapedMessage>();
  }
};

}  // namespace

bool setupLogging(const LogConfig& cfg) {
  auto logger = spdlog::stderr_logger_mt("sidecrypt");
  spdlog::set_default_logger(logger);
  spdlog::flush_on(spdlog::level::trace);
  return applyLogConfig(cfg);
}

bool applyLogConfig(const LogConfig& cfg) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (cfg.format == LogFormat::Json) {
    formatter->add_flag<JsonEscapedMessage>('*').set_pattern(
        R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":"%*"})");
  } else {
    formatter->add_flag<TextEscapedMessage>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%eZ [%l] %*");
  }
  spdlog::set_formatter(std::move(formatter));
  const auto level = spdlog::level::from_str(cfg.level);
  spdlog::set_level(level);
  if (level == spdlog::level::off && cfg.level != "off") {
    spdlog::set_level(spdlog::level::info);
    spdlog::warn("unknown log level '{}', using info", cfg.level);
    return false;
  }
  return true;
}

std::string connectionTag(unsigned long long id) {
  return "[C" + std::to_string(id) + "]";
}

}  // namespace sidecrypt::proxy
