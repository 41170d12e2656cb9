#include "proxy/registry/replies.hpp"

#include "proxy/cache/fetch_through.hpp"

namespace regpin::proxy::registry {

reply error_reply(const oci::error& e) {
    reply r;
    r.status = e.status();
    r.body = e.body();
    r.header("Content-Type", "application/json");
    if (e.retry_after_s > 0) r.header("Retry-After", std::to_string(e.retry_after_s));
    return r;
}

reply storage_failure(const char* what) { return error_reply(cache::storage_error(what)); }

reply storage_failure(const char* what, const boost::system::error_code& ec) {
    return error_reply(cache::storage_error(what, ec));
}

}  // namespace regpin::proxy::registry
