// The BPE model on raw bytes: a word (one pre-token, as UTF-8 bytes) starts as one symbol per
// byte and the adjacent pair of lowest merge rank is merged, leftmost first among equal
// ranks, until no pair has a rank. Words are cached (word -> ids).
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/str_map.h"

namespace spense::tok {

class Bpe {
 public:
  static constexpr uint32_t kNoRank = 0xFFFFFFFFu;

  // byte_ids[b]: the id of the one-byte token b. words: every vocab entry by its bytes, for
  // ignore_merges (a word found there is emitted whole). Merges are added with add_merge.
  Bpe(const int32_t (&byte_ids)[256], StrMap words, bool ignore_merges, size_t merges_hint);
  Bpe(const Bpe&) = delete;
  Bpe& operator=(const Bpe&) = delete;

  // A later merge of the same pair replaces the earlier one (as tokenizers does).
  void add_merge(int32_t left, int32_t right, int32_t merged, uint32_t rank);

  // Append the ids of word (non-empty bytes) to out.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  // Drop every cached word (for benchmarks of the uncached path).
  void clear_cache() const;

 private:
  struct Merge {
    uint32_t rank;
    int32_t merged;
  };
  // (rank, merged id) of the pair, or rank kNoRank.
  Merge lookup(int32_t left, int32_t right) const {
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
                         static_cast<uint32_t>(right);
    size_t h = static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
    for (;;) {
      const Slot& s = slots_[h];
      if (s.key == key) return {s.rank, s.merged};
      if (s.key == kEmpty) return {kNoRank, -1};
      h = (h + 1) & mask_;
    }
  }
  // Merge syms[0..n) in place; return the new count.
  size_t merge_small(int32_t* syms, size_t n) const;
  size_t merge_large(int32_t* syms, size_t n) const;

  static constexpr uint64_t kEmpty = ~0ULL;
  struct Slot {
    uint64_t key;
    uint32_t rank;
    int32_t merged;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 0;

  int32_t byte_ids_[256];
  StrMap words_;
  bool ignore_merges_;

  // word -> ids for short words: a two-way set-associative table (4 MiB) of one cache line
  // per entry; a new word goes first in its set and pushes the older entry to the second
  // way. encode_word only try_locks it, so concurrent callers never wait on each other
  // (they skip the cache instead).
  static constexpr size_t kCacheKey = 22, kCacheIds = 8, kCacheSlots = size_t{1} << 16;
  struct alignas(64) CacheSlot {
    uint64_t hash;
    uint8_t len;  // 0: empty
    uint8_t n;
    char key[kCacheKey];
    int32_t ids[kCacheIds];
  };
  mutable std::mutex cache_mu_;
  mutable std::vector<CacheSlot> cache_;
};

}  // namespace spense::tok
