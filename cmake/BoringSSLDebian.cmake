# BoringSSL from Debian's android-libboringssl-dev (no pkg-config file, no CMake config).
# NO_DEFAULT_PATH keeps OpenSSL's libssl.so (from libssl-dev) out; an IMPORTED target makes the
# include directory -isystem, which both beats /usr/include/openssl and silences BoringSSL's
# own header warnings under gcc -Werror. See docs/building.md.
set(_bssl_libdir "/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/android")
find_path(BORINGSSL_INCLUDE_DIR NAMES openssl/is_boringssl.h
  PATHS /usr/include/android NO_DEFAULT_PATH REQUIRED)
find_library(BORINGSSL_CRYPTO_LIBRARY NAMES crypto PATHS "${_bssl_libdir}" NO_DEFAULT_PATH REQUIRED)
find_library(BORINGSSL_SSL_LIBRARY NAMES ssl PATHS "${_bssl_libdir}" NO_DEFAULT_PATH REQUIRED)

add_library(BoringSSL::crypto SHARED IMPORTED)
set_target_properties(BoringSSL::crypto PROPERTIES
  IMPORTED_LOCATION "${BORINGSSL_CRYPTO_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${BORINGSSL_INCLUDE_DIR}")
add_library(BoringSSL::ssl SHARED IMPORTED)
set_target_properties(BoringSSL::ssl PROPERTIES
  IMPORTED_LOCATION "${BORINGSSL_SSL_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${BORINGSSL_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES BoringSSL::crypto)
# The directory is not on the loader path: installed binaries need it as RUNPATH.
set(BORINGSSL_RUNTIME_DIR "${_bssl_libdir}")
