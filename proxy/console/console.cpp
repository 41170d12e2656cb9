#include "proxy/console/console.hpp"

#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "proxy/console/assets.hpp"

namespace regpin::proxy::console {

namespace {

// 32 random bytes as 64 hex digits.
std::string random_hex() {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        throw std::runtime_error("OpenSSL's random generator failed");
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(64);
    for (unsigned char b : bytes) {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 15]);
    }
    return out;
}

}  // namespace

sessions::sessions(std::chrono::seconds lifetime, std::size_t max_sessions)
    : lifetime_(lifetime), max_(max_sessions) {}

sessions::opened sessions::open(const std::string& token_name) {
    opened o{random_hex(), {token_name, random_hex(), {}}};
    auto now = std::chrono::steady_clock::now();
    o.s.expires = now + lifetime_;
    std::lock_guard lock(mutex_);
    for (auto it = by_id_.begin(); it != by_id_.end();)
        it = it->second.expires <= now ? by_id_.erase(it) : std::next(it);
    while (by_id_.size() >= max_) {
        auto oldest = by_id_.begin();
        for (auto it = by_id_.begin(); it != by_id_.end(); ++it)
            if (it->second.expires < oldest->second.expires) oldest = it;
        by_id_.erase(oldest);
    }
    by_id_.emplace(o.id, o.s);
    return o;
}

std::optional<session> sessions::find(std::string_view cookie_header) {
    auto id = cookie_value(cookie_header, cookie_name);
    if (id.size() != 64) return std::nullopt;
    std::lock_guard lock(mutex_);
    // A map lookup by the id: its comparisons may leak timing about ids near it, but an id is
    // 256 random bits, so learning a prefix does not help guess one.
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return std::nullopt;
    if (it->second.expires <= std::chrono::steady_clock::now()) {
        by_id_.erase(it);
        return std::nullopt;
    }
    return it->second;
}

bool sessions::close(std::string_view cookie_header) {
    auto id = cookie_value(cookie_header, cookie_name);
    std::lock_guard lock(mutex_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return false;
    by_id_.erase(it);
    return true;
}

std::size_t sessions::size() const {
    std::lock_guard lock(mutex_);
    return by_id_.size();
}

std::string sessions::cookie(const std::string& id, bool secure) const {
    return std::string(cookie_name) + "=" + id +
           "; Path=/; Max-Age=" + std::to_string(lifetime_.count()) +
           "; HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "");
}

std::string sessions::removal_cookie(bool secure) {
    return std::string(cookie_name) + "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" +
           (secure ? "; Secure" : "");
}

bool same_secret(std::string_view a, std::string_view b) {
    if (a.size() != b.size() || a.empty()) return false;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view cookie_value(std::string_view header, std::string_view name) {
    while (!header.empty()) {
        auto end = header.find(';');
        auto part = header.substr(0, end);
        while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
        if (part.size() > name.size() && part.substr(0, name.size()) == name &&
            part[name.size()] == '=')
            return part.substr(name.size() + 1);
        if (end == std::string_view::npos) break;
        header.remove_prefix(end + 1);
    }
    return {};
}

const asset* find_asset(std::string_view name) {
    static const asset files[] = {
        {"text/html; charset=utf-8", assets::index_html},
        {"text/javascript; charset=utf-8", assets::console_js},
        {"text/css; charset=utf-8", assets::console_css},
    };
    if (name.empty() || name == "index.html") return &files[0];
    if (name == "console.js") return &files[1];
    if (name == "console.css") return &files[2];
    return nullptr;
}

const std::map<std::string, std::string>& security_headers() {
    static const std::map<std::string, std::string> h = {
        {"Content-Security-Policy",
         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
         "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"},
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {"Cache-Control", "no-store"},
    };
    return h;
}

}  // namespace regpin::proxy::console
