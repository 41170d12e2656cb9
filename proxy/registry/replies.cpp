#include "proxy/registry/replies.hpp"

#include "storage/errors.hpp"

#include <spdlog/spdlog.h>

namespace regpin::proxy::registry {

reply error_reply(const oci::error& e) {
    reply r;
    r.status = e.status();
    r.body = e.body();
    r.header("Content-Type", "application/json");
    return r;
}

reply storage_failure(const char* what) {
    spdlog::error("storage failure while {}", what);
    return error_reply(
        {oci::error_code::unknown, std::string("cache storage failure while ") + what});
}

reply storage_failure(const char* what, const boost::system::error_code& ec) {
    if (ec != storage::errc::unavailable) return storage_failure(what);
    // Never a local decision another replica could contradict: the client retries later.
    spdlog::warn("pin store unreachable while {}: 503", what);
    auto r = error_reply({oci::error_code::unavailable,
                          std::string("the pin store (etcd) cannot be reached while ") + what +
                              "; this tag has no pin in memory yet, so it cannot be answered"});
    r.header("Retry-After", "5");
    return r;
}

}  // namespace regpin::proxy::registry
