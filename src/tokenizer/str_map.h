// A compact string -> int32 hash map for the vocabularies (hundreds of thousands of short
// keys): keys live in one arena, slots are open-addressed with linear probing and keep the
// full 64-bit hash, so a look-up touches one slot and compares one key.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace spense::tok {

// A fast 64-bit hash of bytes (8-byte chunks through a strong integer mixer).
inline uint64_t hash_bytes(std::string_view s) {
  auto mix = [](uint64_t x) {
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 29);
  };
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t x;
    std::memcpy(&x, s.data() + i, 8);
    h = mix(h ^ x);
  }
  if (i < s.size()) {
    uint64_t x = 0;
    std::memcpy(&x, s.data() + i, s.size() - i);
    h = mix(h ^ x);
  }
  return h;
}

class StrMap {
 public:
  StrMap() { rehash(16); }

  // Room for n keys of key_bytes bytes in all.
  void reserve(size_t n, size_t key_bytes = 0) {
    arena_.reserve(key_bytes);
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    if (cap > slots_.size()) rehash(cap);
  }

  // Sets key's value (replacing an earlier one).
  void set(std::string_view key, int32_t value) {
    if ((count_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
    const uint64_t h = hash_bytes(key);
    size_t i = h & mask_;
    for (;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.len == kEmpty) break;
      if (s.hash == h && equal(s, key)) {
        s.value = value;
        return;
      }
    }
    Slot& s = slots_[i];
    s.hash = h;
    s.off = arena_.size();
    s.len = static_cast<uint32_t>(key.size());
    s.value = value;
    arena_.append(key);
    ++count_;
  }

  // key's value, or -1.
  int32_t find(std::string_view key) const {
    const uint64_t h = hash_bytes(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.len == kEmpty) return -1;
      if (s.hash == h && equal(s, key)) return s.value;
    }
  }

  size_t size() const { return count_; }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  struct Slot {
    uint64_t hash = 0;
    size_t off = 0;
    uint32_t len = kEmpty;
    int32_t value = -1;
  };
  bool equal(const Slot& s, std::string_view key) const {
    return s.len == key.size() && std::memcmp(arena_.data() + s.off, key.data(), key.size()) == 0;
  }
  void rehash(size_t cap) {
    std::vector<Slot> old(cap);
    old.swap(slots_);
    mask_ = cap - 1;
    for (const Slot& s : old) {
      if (s.len == kEmpty) continue;
      size_t i = s.hash & mask_;
      while (slots_[i].len != kEmpty) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }

  std::vector<Slot> slots_;
  std::string arena_;
  size_t count_ = 0;
  size_t mask_ = 0;
};

}  // namespace spense::tok
