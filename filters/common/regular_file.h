#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <variant>

#include "filters/common/secret_bytes.h"

namespace sidecrypt::filters {

// An open regular file: the descriptor (blocking, close-on-exec) and its size at open time.
// Move-only; closes on destruction.
class RegularFile {
 public:
  RegularFile(int fd, off_t size, mode_t mode) : fd_(fd), size_(size), mode_(mode) {}
  ~RegularFile();
  RegularFile(RegularFile&& other) noexcept;
  RegularFile& operator=(RegularFile&& other) = delete;
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  int fd() const { return fd_; }
  off_t size() const { return size_; }
  mode_t mode() const { return mode_; }

 private:
  int fd_;
  off_t size_;
  mode_t mode_;
};

// Why a file could not be opened: `error` is the errno of the failed open() (0 when the open
// succeeded but the file was refused, e.g. a FIFO), `text` a sentence without the path.
struct FileRefused {
  int error = 0;
  std::string text;
};

// Opens `path` for reading without ever blocking on what it names: the open uses O_NONBLOCK, so
// a FIFO with no writer or a device returns at once, and anything that is not a regular file is
// refused before a byte is read. Every configuration, keyring, certificate and key file goes
// through here: a careless path (a FIFO, /dev/stdin, a directory) is an error, never a frozen
// loop or worker. `extra_flags` adds open(2) flags such as O_NOFOLLOW.
std::variant<RegularFile, FileRefused> openRegularFile(const std::filesystem::path& path,
                                                       int extra_flags = 0);

// Reads a whole regular file of at most `max_bytes` into locked memory (it may hold keys).
// Errors are sentences that start with the path.
std::variant<SecretBytes, std::string> readRegularFile(const std::filesystem::path& path,
                                                       size_t max_bytes, int extra_flags = 0);

// Reads what is left of an open file into locked memory (at most `max_bytes`).
std::variant<SecretBytes, std::string> readAll(const RegularFile& file, size_t max_bytes);

}  // namespace sidecrypt::filters
