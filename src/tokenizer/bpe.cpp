// The BPE merge loop (see bpe.h).
#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstring>
#include <queue>

namespace spense::tok {

Bpe::Bpe(const int32_t (&byte_ids)[256], StrMap words, bool ignore_merges, size_t merges_hint)
    : words_(std::move(words)), ignore_merges_(ignore_merges) {
  std::copy(std::begin(byte_ids), std::end(byte_ids), byte_ids_);
  size_t cap = 16;
  int bits = 4;
  while (cap < merges_hint * 2 + 16) {
    cap <<= 1;
    ++bits;
  }
  slots_.assign(cap, Slot{kEmpty, kNoRank, -1});
  cache_.assign(kCacheSlots, CacheSlot{});
  mask_ = cap - 1;
  shift_ = 64 - bits;
}

void Bpe::add_merge(int32_t left, int32_t right, int32_t merged, uint32_t rank) {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
                       static_cast<uint32_t>(right);
  size_t h = static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
  while (slots_[h].key != kEmpty && slots_[h].key != key) h = (h + 1) & mask_;
  slots_[h] = Slot{key, rank, merged};
}

// Quadratic in the word length but with one table look-up per pair created: best for the
// short words that make up almost all text.
size_t Bpe::merge_small(int32_t* syms, size_t n) const {
  uint32_t ranks[64];
  int32_t merged[64];
  for (size_t i = 0; i + 1 < n; ++i) {
    const Merge m = lookup(syms[i], syms[i + 1]);
    ranks[i] = m.rank;
    merged[i] = m.merged;
  }
  while (n > 1) {
    size_t best = 0;
    uint32_t best_rank = kNoRank;
    for (size_t i = 0; i + 1 < n; ++i) {
      if (ranks[i] < best_rank) {  // strict: the leftmost pair wins a tie
        best_rank = ranks[i];
        best = i;
      }
    }
    if (best_rank == kNoRank) break;
    // syms[best] and syms[best + 1] become one symbol; pair i + 1 moves to i past it.
    syms[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) syms[i] = syms[i + 1];
    for (size_t i = best + 1; i + 2 < n; ++i) {
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0) {
      const Merge m = lookup(syms[best - 1], syms[best]);
      ranks[best - 1] = m.rank;
      merged[best - 1] = m.merged;
    }
    if (best + 1 < n) {
      const Merge m = lookup(syms[best], syms[best + 1]);
      ranks[best] = m.rank;
      merged[best] = m.merged;
    }
  }
  return n;
}

// A linked list of symbols and a heap of candidate merges ordered by (rank, position);
// entries made stale by earlier merges are recognised by their pair no longer being there.
size_t Bpe::merge_large(int32_t* syms, size_t count) const {
  const int32_t n = static_cast<int32_t>(count);
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Cand {
    uint32_t rank;
    int32_t pos;
    int32_t left, right, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Cand> heap_storage;
  heap_storage.reserve(n);
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap(std::greater<Cand>{},
                                                                        std::move(heap_storage));
  auto push = [&](int32_t i) {
    const int32_t j = next[i];
    if (j < 0) return;
    const Merge m = lookup(syms[i], syms[j]);
    if (m.rank != kNoRank) heap.push(Cand{m.rank, i, syms[i], syms[j], m.merged});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int32_t i = c.pos;
    if (!alive[i] || syms[i] != c.left) continue;
    const int32_t j = next[i];
    if (j < 0 || syms[j] != c.right) continue;
    syms[i] = c.merged;
    alive[j] = 0;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    if (prev[i] >= 0) push(prev[i]);
    push(i);
  }
  size_t k = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) syms[k++] = syms[i];
  return k;
}

void Bpe::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (ignore_merges_) {
    const int32_t id = words_.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheKey;
  uint64_t h = 0;
  if (cacheable) {
    h = hash_bytes(word);
    std::unique_lock<std::mutex> lock(cache_mu_, std::try_to_lock);
    if (lock.owns_lock()) {
      const CacheSlot* set = &cache_[(h & (kCacheSlots / 2 - 1)) * 2];
      for (int way = 0; way < 2; ++way) {
        const CacheSlot& s = set[way];
        if (s.hash == h && s.len == word.size() && std::memcmp(s.key, word.data(), word.size()) == 0) {
          out.insert(out.end(), s.ids, s.ids + s.n);
          return;
        }
      }
    }
  }
  const size_t first = out.size();
  out.resize(first + word.size());
  int32_t* syms = out.data() + first;
  for (size_t i = 0; i < word.size(); ++i) syms[i] = byte_ids_[static_cast<unsigned char>(word[i])];
  const size_t n = word.size() <= 64 ? merge_small(syms, word.size()) : merge_large(syms, word.size());
  out.resize(first + n);
  if (cacheable && n <= kCacheIds) {
    std::unique_lock<std::mutex> lock(cache_mu_, std::try_to_lock);
    if (lock.owns_lock()) {
      // Two ways per set: the newest entry goes first, the one it displaces second.
      CacheSlot* set = &cache_[(h & (kCacheSlots / 2 - 1)) * 2];
      set[1] = set[0];
      CacheSlot& s = set[0];
      s.hash = h;
      s.len = static_cast<uint8_t>(word.size());
      s.n = static_cast<uint8_t>(n);
      std::memcpy(s.key, word.data(), word.size());
      std::memcpy(s.ids, out.data() + first, n * sizeof(int32_t));
    }
  }
}

void Bpe::clear_cache() const {
  std::lock_guard<std::mutex> lock(cache_mu_);
  for (CacheSlot& s : cache_) s.len = 0;
}

}  // namespace spense::tok
