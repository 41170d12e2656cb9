#include "storage/chunk_locations.hpp"

namespace regpin::storage {

chunk_locations::chunk_locations(std::size_t max_chunks) : max_chunks_(max_chunks) {}

std::optional<chunk_span> chunk_locations::find(const digest& d, std::uint64_t index) {
    std::lock_guard lock(mutex_);
    auto it = by_digest_.find(d);
    if (it == by_digest_.end()) return std::nullopt;
    auto& spans = it->second->spans;
    if (index >= spans.size() || !spans[index]) return std::nullopt;
    lru_.splice(lru_.begin(), lru_, it->second);
    return spans[index];
}

std::uint64_t chunk_locations::epoch() const {
    std::lock_guard lock(mutex_);
    return epoch_;
}

void chunk_locations::put(const digest& d, std::uint64_t index, chunk_span span,
                          std::uint64_t epoch) {
    // A chunk past the bound (32 GiB into a blob) is located through RocksDB each time.
    if (index >= max_chunks_) return;
    std::lock_guard lock(mutex_);
    if (epoch != epoch_) return;  // the blob may have been deleted since the read began
    auto it = by_digest_.find(d);
    if (it == by_digest_.end()) {
        lru_.push_front(blob{d, {}});
        it = by_digest_.emplace(d, lru_.begin()).first;
    } else {
        lru_.splice(lru_.begin(), lru_, it->second);
    }
    auto& b = *it->second;
    if (index >= b.spans.size()) {
        held_ += index + 1 - b.spans.size();
        b.spans.resize(index + 1);
    }
    b.spans[index] = std::move(span);
    while (held_ > max_chunks_ && lru_.size() > 1) drop_oldest();
}

void chunk_locations::forget(const digest& d) {
    std::lock_guard lock(mutex_);
    ++epoch_;
    auto it = by_digest_.find(d);
    if (it == by_digest_.end()) return;
    held_ -= it->second->spans.size();
    lru_.erase(it->second);
    by_digest_.erase(it);
}

std::size_t chunk_locations::chunks() const {
    std::lock_guard lock(mutex_);
    return held_;
}

void chunk_locations::drop_oldest() {
    auto& b = lru_.back();
    held_ -= b.spans.size();
    by_digest_.erase(b.d);
    lru_.pop_back();
}

}  // namespace regpin::storage
