#pragma once
// The client of one configured upstream registry, on top of the generic http::client:
// anonymous and credentialed Bearer tokens (cached per scope until they expire, in a bounded
// LRU), Basic auth once challenged, the `ns` query parameter for upstreams that are proxies
// themselves, and offline mode (nothing is ever sent).
//
// An upstream may have several URLs, mirrors of one registry ("https://mirror.gcr.io", then
// "https://registry-1.docker.io"). A request goes to the first one that is not backing off; one
// that fails (no answer, 5xx, 429) backs off, 1 s doubling to 60 s, and the request moves on to
// the next; one that answers 404, 401 or 403 (a mirror that lacks the repository) passes the
// request on too, without backing off. The last URL's answer is the client's. When every URL is
// backing off, a request tries them all. Each URL has its own tokens.
//
// It never sends a client's credentials: requests carry only what this upstream's
// configuration provides, and only to the upstream's own hosts, its URLs (redirects to a CDN go
// without).
// Thread-safe: send() may be called from any thread concurrently.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/verb.hpp>

#include "config/config.hpp"
#include "proxy/http/client.hpp"
#include "proxy/upstream/challenge.hpp"
#include "proxy/upstream/token_cache.hpp"

namespace regpin::proxy::upstream {

enum class errc {
    ok = 0,
    auth_failed = 1,  // token server unreachable or answered without a token
    offline,          // regpin runs offline: nothing is sent
};

const boost::system::error_category& upstream_category() noexcept;
inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), upstream_category()};
}

using http::result;

struct request {
    boost::beast::http::verb method = boost::beast::http::verb::get;
    std::string target;  // origin form on the upstream: "/v2/library/nginx/manifests/1.27"
    std::string accept;  // one merged Accept value; empty sends none
    std::string range;   // a Range value; empty sends none
    std::string scope;   // token scope, "repository:library/nginx:pull"; empty for none
};

// Told about every send(): the final status (0 on a transport error), the error, and the time
// to the response header. For metrics; must not block.
using observer = std::function<void(const std::string& registry, unsigned status,
                                    const boost::system::error_code& error, double seconds)>;

// Docker Hub's pull quota as regpin's last upstream answer stated it ("ratelimit-remaining:
// 76;w=21600"), and what regpin does about it: at or below `low_water`, pin checks of the
// upstream pause (pins::scheduler) and no new manifest is fetched (fetch_manifest refuses with
// Retry-After) for `pause` after that answer, or until an answer states more again. Pinned and
// cached content is served all along.
struct quota_policy {
    long low_water = 20;
    std::chrono::seconds pause{900};
};

class registry_client {
public:
    // Throws std::runtime_error when the configuration's URL or CA file is unusable.
    // `own_listeners`: regpin's registry and admin listeners, which no redirect may reach.
    registry_client(boost::asio::any_io_executor ex, const config::upstream& cfg,
                    observer obs = nullptr,
                    std::vector<boost::asio::ip::tcp::endpoint> own_listeners = {},
                    quota_policy quota = {});
    ~registry_client();

    // Sends `req`, answering one auth challenge of the upstream's own host and following
    // redirects. The final response (any status) or a transport error.
    [[nodiscard]] boost::asio::awaitable<result<http::response>> send(request req);

    const config::upstream& settings() const;
    // Which of the upstream's URLs points at `o`, or nullopt: an answer from anywhere else came
    // through a redirect.
    std::optional<std::string> url_at(const http::origin& o) const;

    // Each URL in the configured order: whether requests go to it now, or it is backing off.
    struct url_health {
        std::string url;
        bool up = true;
    };
    std::vector<url_health> health() const;

    // Connections to the upstream (and its redirect targets) open now, in use or idle.
    std::size_t open_connections() const;

    // While the upstream's pull quota is at or below the low-water mark: how long until regpin
    // fetches new manifests again, and the remaining quota last stated; nullopt otherwise.
    struct quota_low {
        std::chrono::seconds wait;
        long remaining = 0;
    };
    std::optional<quota_low> quota_exhausted() const;

    // Bearer tokens cached (at most token_cache::default_capacity), for metrics.
    std::size_t cached_tokens() const;

private:
    struct state;
    std::shared_ptr<state> state_;
};

}  // namespace regpin::proxy::upstream

template <>
struct boost::system::is_error_code_enum<regpin::proxy::upstream::errc> : std::true_type {};
