#include "proxy/keyring/keyring_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "filters/common/regular_file.h"
#include "filters/keyring/keyring_codec.h"

namespace sidecrypt::proxy {

namespace fs = std::filesystem;
using filters::keyring::AeadKey;
using filters::keyring::KeySet;

namespace {

std::string errnoText(int err) {
  return std::strerror(err);
}

std::string modeText(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

constexpr off_t kMaxKeyringBytes = 1 << 20;  // a ring of 1 MiB would hold ~23k keys

}  // namespace

std::variant<KeySetConstSharedPtr, KeyringMissing, std::string> loadKeyringFile(
    const fs::path& path) {
  const std::string name = path.string();
  // Never blocks on the path: a FIFO or device is refused before anything is read.
  auto opened = filters::openRegularFile(path, O_NOFOLLOW);
  if (auto* refused = std::get_if<filters::FileRefused>(&opened)) {
    if (refused->error == ENOENT) {
      return KeyringMissing{};
    }
    if (refused->error == ELOOP) {
      return name + ": keyring file is a symbolic link; point the config at the real file";
    }
    if (refused->error != 0) {
      return name + ": cannot open keyring file: " + errnoText(refused->error);
    }
    return name + ": keyring path " + refused->text;
  }
  const auto& file = std::get<filters::RegularFile>(opened);
  if ((file.mode() & 077) != 0) {
    return name + ": keyring file permissions " + modeText(file.mode()) +
           " are too open (group/other may access it); run: chmod 600 " + name;
  }
  if (file.size() > kMaxKeyringBytes) {
    return name + ": keyring file is larger than 1 MiB; refusing to load it";
  }
  auto read = filters::readAll(file, static_cast<size_t>(kMaxKeyringBytes));
  if (auto* err = std::get_if<std::string>(&read)) {
    return name + ": keyring file " + *err;
  }
  const auto& body = std::get<SecretBytes>(read);
  auto parsed = filters::keyring::parseKeyringText(body.view());
  if (auto* err = std::get_if<std::string>(&parsed)) {
    return name + ": corrupt keyring file: " + *err;
  }
  return std::get<KeySetConstSharedPtr>(parsed);
}

std::optional<std::string> writeKeyringFile(const fs::path& path, const KeySet& keys) {
  const std::string name = path.string();
  if (keys.empty()) {
    return name + ": refusing to write an empty keyring";
  }
  auto existing = loadKeyringFile(path);
  if (auto* err = std::get_if<std::string>(&existing)) {
    return "not overwriting: " + *err;
  }
  fs::path dir = path.parent_path();
  if (dir.empty()) {
    dir = ".";
  }
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) {
      return dir.string() + ": cannot create keyring directory: " + ec.message();
    }
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  }
  std::string tmpl = (dir / ("." + path.filename().string() + ".tmp.XXXXXX")).string();
  Fd fd(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (fd.get() < 0) {
    return name + ": cannot create temporary file in " + dir.string() + ": " + errnoText(errno);
  }
  auto fail = [&](const std::string& what) {
    int err = errno;
    ::unlink(tmpl.c_str());
    return name + ": " + what + ": " + errnoText(err);
  };
  if (::fchmod(fd.get(), 0600) != 0) {
    return fail("cannot set mode 0600 on temporary file");
  }
  const SecretBytes text = filters::keyring::formatKeyringText(keys);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return fail("cannot write temporary file");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    return fail("cannot fsync temporary file");
  }
  if (::close(fd.release()) != 0) {
    return fail("cannot close temporary file");
  }
  if (::rename(tmpl.c_str(), name.c_str()) != 0) {
    return fail("cannot rename temporary file into place");
  }
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) {
    return dir.string() + ": keyring written but directory fsync failed: " + errnoText(errno);
  }
  return std::nullopt;
}

std::variant<ResolvedKeyring, std::string> resolveKeyring(const fs::path& path,
                                                          const SecretBytes* encrypt,
                                                          bool create_if_missing) {
  ResolvedKeyring out;
  auto loaded = loadKeyringFile(path);
  if (auto* err = std::get_if<std::string>(&loaded)) {
    return *err;
  }
  if (auto* keys = std::get_if<KeySetConstSharedPtr>(&loaded)) {
    out.keys = *keys;
    if (encrypt != nullptr && !out.keys->find(*encrypt)) {
      out.warnings.push_back(path.string() +
                             ": keyring does not include the key given by gossip.encrypt; "
                             "using the keyring file (Consul does the same)");
    }
    return out;
  }
  if (encrypt == nullptr) {
    return out;  // no file, no key: no keyring
  }
  std::vector<std::unique_ptr<AeadKey>> keys;
  keys.push_back(AeadKey::create(SecretBytes::copyOf(encrypt->span())));
  out.keys = std::make_shared<const KeySet>(std::move(keys));
  if (create_if_missing) {
    if (auto err = writeKeyringFile(path, *out.keys)) {
      return *err;
    }
    out.created = true;
  }
  return out;
}

}  // namespace sidecrypt::proxy
