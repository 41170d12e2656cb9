#include "proxy/upstream/token_cache.hpp"

namespace regpin::proxy::upstream {

token_cache::token_cache(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

std::optional<std::string> token_cache::find(const std::string& scope, clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(scope);
    if (it == entries_.end()) return std::nullopt;
    if (now >= it->second.expires) {
        lru_.erase(it->second.recency);
        entries_.erase(it);
        return std::nullopt;
    }
    lru_.splice(lru_.begin(), lru_, it->second.recency);
    return it->second.token;
}

void token_cache::put(const std::string& scope, std::string token, clock::time_point expires,
                      clock::time_point now) {
    std::lock_guard lock(mutex_);
    if (auto it = entries_.find(scope); it != entries_.end()) {
        it->second.token = std::move(token);
        it->second.expires = expires;
        lru_.splice(lru_.begin(), lru_, it->second.recency);
        return;
    }
    if (now - last_sweep_ >= sweep_interval) sweep_locked(now);
    while (entries_.size() >= capacity_) {
        entries_.erase(lru_.back());
        lru_.pop_back();
    }
    lru_.push_front(scope);
    entries_.emplace(scope, entry{std::move(token), expires, lru_.begin()});
}

void token_cache::sweep_locked(clock::time_point now) {
    last_sweep_ = now;
    for (auto it = entries_.begin(); it != entries_.end();) {
        if (now >= it->second.expires) {
            lru_.erase(it->second.recency);
            it = entries_.erase(it);
        } else {
            ++it;
        }
    }
}

std::size_t token_cache::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

}  // namespace regpin::proxy::upstream
