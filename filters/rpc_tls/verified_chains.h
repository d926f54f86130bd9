#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

// Forward declarations only (see tls_context.h).
struct x509_st;
struct stack_st_X509;

namespace sidecrypt::filters::rpc_tls {

using Sha256 = std::array<uint8_t, 32>;

// What one X.509 path verification of a peer's chain established (chain, signatures, EKU and
// dates against one CA set); the name check and the proof of key possession are not part of it.
struct VerifiedChain {
  Sha256 anchor{};         // SHA-256 (DER) of the configured CA the built chain ended at
  int64_t not_before = 0;  // latest notBefore of the built chain (unix seconds)
  int64_t not_after = 0;   // earliest notAfter of the built chain, its CA included
};

// What a server keeps of a client's leaf certificate once its sessions hold only the leaf's
// SHA-256 (SSL_CTX_set_retain_only_sha256_of_client_certs): taken when the chain is verified, and
// what a resumed session's identity, chain facts and expiry come from.
struct VerifiedLeaf {
  VerifiedChain chain;         // the chain the leaf was last verified in
  int64_t leaf_not_after = 0;  // the leaf's own notAfter (unix seconds)
  bool names_server = false;   // a DNS SAN is the context's server.<dc>.<domain> (never the CN)
  uint64_t id = 0;  // set by storeLeaf, kept while the entry lives; 0 is never an entry\'s
  std::string common_name;
  std::vector<std::string> dns_names;  // DNS SANs, in certificate order
};

// The SHA-256 over the DER of every certificate the peer presented, in the order it sent them
// (the leaf first): what a cache entry is keyed by. nullopt if a certificate cannot be encoded.
std::optional<Sha256> peerChainDigest(x509_st* leaf, stack_st_X509* presented);

// Peer chains that passed a full X.509 path verification (docs/architecture.md §4, "Verified
// chains"), so the same chain presented again skips the path building and the CA signature
// checks. Only that is skipped: the handshake still checks the peer's CertificateVerify signature
// with the leaf's key (proof of possession), and the caller still checks the name it expects.
//
// An entry is keyed by the exact presented chain and by the trust it was verified under (the CA
// set and the purpose, `trust`), is used only while the time lies within every certificate of
// the built chain, and ends at the earliest notAfter. The cache belongs to one TlsContext, so a
// reload or a certificate watch (a new CA set) starts empty. At most `capacity` entries, least
// recently used dropped first. Safe to use from several threads (one mutex, held for a lookup or
// an insert, never while verifying).
class VerifiedChainCache {
 public:
  static constexpr size_t kDefaultCapacity = 8192;
  explicit VerifiedChainCache(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}
  VerifiedChainCache(const VerifiedChainCache&) = delete;
  VerifiedChainCache& operator=(const VerifiedChainCache&) = delete;

  // The entry for (`chain`, `trust`) if `now` (unix seconds) lies within it; an entry whose time
  // is over is dropped.
  std::optional<VerifiedChain> find(const Sha256& chain, const Sha256& trust, int64_t now);
  // Records a chain that just passed verification under `trust` (replaces any older entry).
  void store(const Sha256& chain, const Sha256& trust, const VerifiedChain& verified);
  size_t size() const;  // chains
  void clear();         // benchmarks and tests: the next handshakes verify in full (both maps)

  // A server's verified client leaves, by the SHA-256 of the leaf's DER (what a session keeps
  // when it retains only that): the same rules (trust, dates of the whole chain, LRU bound).
  std::optional<VerifiedLeaf> findLeaf(const Sha256& leaf, const Sha256& trust, int64_t now);
  // Files `verified` and returns its id: the entry's id when the leaf already has one, else a
  // new one. A ticket names the id it needs (TicketKeys::sealTag), so a ticket whose entry is
  // gone is not resumed (a full handshake) instead of being refused.
  uint64_t storeLeaf(const Sha256& leaf, const Sha256& trust, VerifiedLeaf verified);
  // The id of the leaf's entry, or 0; whether an entry with this id lives at `now`.
  uint64_t leafId(const Sha256& leaf, const Sha256& trust, int64_t now);
  bool hasLeafId(uint64_t id, int64_t now);
  size_t leafCount() const;

 private:
  using Key = std::array<uint8_t, 64>;  // chain (or leaf) digest, then trust digest
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  template <typename V>
  struct Lru {
    struct Entry {
      Key key;
      V value;
    };
    std::list<Entry> order;  // most recently used first
    std::unordered_map<Key, typename std::list<Entry>::iterator, KeyHash> index;
  };
  static Key keyOf(const Sha256& chain, const Sha256& trust);
  template <typename V>
  std::optional<V> findIn(Lru<V>& lru, const Key& key, int64_t now);
  template <typename V>
  void storeIn(Lru<V>& lru, const Key& key, V value);
  void dropped(const VerifiedChain& /*chain*/) {}
  void dropped(const VerifiedLeaf& leaf) { leaf_ids_.erase(leaf.id); }

  mutable std::mutex mu_;
  size_t capacity_;  // of each map
  Lru<VerifiedChain> chains_;
  Lru<VerifiedLeaf> leaves_;
  std::unordered_map<uint64_t, Key> leaf_ids_;  // of the entries in leaves_
  uint64_t next_leaf_id_ = 0;
};

}  // namespace sidecrypt::filters::rpc_tls
