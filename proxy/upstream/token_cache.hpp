#pragma once
// Bearer tokens of one upstream by scope ("repository:library/nginx:pull"), bounded. The scope
// comes from a repository name a client chooses, so a loop over random names must not grow the
// cache: at most `capacity` entries, the least recently used going first, and expired entries
// swept at most once per sweep_interval as tokens are added (an expired entry that is looked up
// goes at once).
// Thread-safe.

#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace regpin::proxy::upstream {

class token_cache {
public:
    using clock = std::chrono::steady_clock;
    static constexpr std::size_t default_capacity = 1024;
    static constexpr std::chrono::seconds sweep_interval{60};

    explicit token_cache(std::size_t capacity = default_capacity);

    // The token for `scope` while it has not expired at `now` (and marks it recently used).
    std::optional<std::string> find(const std::string& scope, clock::time_point now = clock::now());

    // Stores the token for `scope` until `expires`, making room as described above.
    void put(const std::string& scope, std::string token, clock::time_point expires,
             clock::time_point now = clock::now());

    std::size_t size() const;

private:
    struct entry {
        std::string token;
        clock::time_point expires;
        std::list<std::string>::iterator recency;  // into lru_
    };
    void sweep_locked(clock::time_point now);

    const std::size_t capacity_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, entry> entries_;
    std::list<std::string> lru_;  // most recently used first
    clock::time_point last_sweep_{};
};

}  // namespace regpin::proxy::upstream
