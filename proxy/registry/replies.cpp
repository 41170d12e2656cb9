#include "proxy/registry/replies.hpp"

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

}  // namespace regpin::proxy::registry
