#pragma once
// The operator console (issue 16, point 2): a web page on the admin listener at /ui/, built
// into the binary (sites are air gapped: no external asset, no CDN), and its login sessions.
//
// Logging in exchanges an admin token for a session: a random id in an HttpOnly,
// SameSite=Strict cookie (Secure under admin.tls), and a CSRF token that the page sends as
// X-CSRF-Token with every change. Sessions live in memory (a restart logs everyone out), end
// after `lifetime` or at logout, and are bounded in number (the oldest goes first).
// Thread-safe.

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace regpin::proxy::console {

inline constexpr std::string_view cookie_name = "regpin_session";

struct session {
    std::string token_name;  // the admin token it was opened with (admin.tokens[].name)
    std::string csrf;        // sent back as X-CSRF-Token on every change
    std::chrono::steady_clock::time_point expires;
};

class sessions {
public:
    explicit sessions(std::chrono::seconds lifetime = std::chrono::hours(8),
                      std::size_t max_sessions = 1024);

    struct opened {
        std::string id;  // the cookie's value
        session s;
    };
    // A new session for `token_name` (256-bit random id and CSRF token, from OpenSSL).
    opened open(const std::string& token_name);
    // The live session named by the Cookie header's regpin_session, if any.
    std::optional<session> find(std::string_view cookie_header);
    // Ends the session named by the Cookie header; whether there was one.
    bool close(std::string_view cookie_header);
    std::size_t size() const;

    // Set-Cookie values: a session's cookie, and one that removes it.
    std::string cookie(const std::string& id, bool secure) const;
    static std::string removal_cookie(bool secure);

private:
    std::chrono::seconds lifetime_;
    std::size_t max_;
    mutable std::mutex mutex_;
    std::map<std::string, session, std::less<>> by_id_;
};

// Whether two secrets are equal, in time independent of where they differ.
bool same_secret(std::string_view a, std::string_view b);

// The value of cookie `name` in a Cookie header ("a=1; regpin_session=xyz"), or empty.
std::string_view cookie_value(std::string_view header, std::string_view name);

// A file of the console: "" or "index.html", "console.js", "console.css".
struct asset {
    std::string_view content_type;
    std::string_view body;
};
const asset* find_asset(std::string_view name);

// Headers every console page and file is sent with: a Content-Security-Policy that allows
// nothing from elsewhere (no inline script), no framing, no sniffing, no referrer.
const std::map<std::string, std::string>& security_headers();

}  // namespace regpin::proxy::console
