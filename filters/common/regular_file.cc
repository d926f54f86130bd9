#include "filters/common/regular_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace sidecrypt::filters {

namespace {

const char* kindOf(mode_t mode) {
  if (S_ISFIFO(mode)) {
    return "a FIFO";
  }
  if (S_ISDIR(mode)) {
    return "a directory";
  }
  if (S_ISSOCK(mode)) {
    return "a socket";
  }
  if (S_ISCHR(mode) || S_ISBLK(mode)) {
    return "a device";
  }
  return "not a regular file";
}

}  // namespace

RegularFile::~RegularFile() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

RegularFile::RegularFile(RegularFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), size_(other.size_), mode_(other.mode_) {}

std::variant<RegularFile, FileRefused> openRegularFile(const std::filesystem::path& path,
                                                       int extra_flags) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | extra_flags);
  if (fd < 0) {
    const int err = errno;
    return FileRefused{err, std::strerror(err)};
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return FileRefused{0, std::string("cannot stat: ") + std::strerror(err)};
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileRefused{
        0, std::string("is ") + kindOf(st.st_mode) + ", not a regular file; refusing to read it"};
  }
  // Regular files ignore O_NONBLOCK for reads, but clear it so the descriptor is ordinary.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) {
    ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  return RegularFile(fd, st.st_size, st.st_mode);
}

std::variant<SecretBytes, std::string> readAll(const RegularFile& file, size_t max_bytes) {
  if (file.size() < 0 || static_cast<uint64_t>(file.size()) > max_bytes) {
    return "is larger than " + std::to_string(max_bytes) + " bytes; refusing to read it";
  }
  SecretBytes body(static_cast<size_t>(file.size()));
  size_t got = 0;
  while (got < body.size()) {
    const ssize_t n = ::read(file.fd(), body.data() + got, body.size() - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return std::string("cannot read: ") + std::strerror(errno);
    }
    if (n == 0) {
      break;  // shrank since the fstat: take what is there
    }
    got += static_cast<size_t>(n);
  }
  body.truncate(got);
  return body;
}

std::variant<SecretBytes, std::string> readRegularFile(const std::filesystem::path& path,
                                                       size_t max_bytes, int extra_flags) {
  auto opened = openRegularFile(path, extra_flags);
  if (auto* refused = std::get_if<FileRefused>(&opened)) {
    return path.string() + ": " +
           (refused->error != 0 ? "cannot open: " + refused->text : refused->text);
  }
  auto body = readAll(std::get<RegularFile>(opened), max_bytes);
  if (auto* err = std::get_if<std::string>(&body)) {
    return path.string() + ": " + *err;
  }
  return std::move(std::get<SecretBytes>(body));
}

}  // namespace sidecrypt::filters
