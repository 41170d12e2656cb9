#pragma once
// The mutating admission webhook (issue 17, point 3): POST /mutate with an AdmissionReview v1
// from the Kubernetes API server, on its own TLS listener (admission.listen). Each container
// image of a Pod, or of a workload's pod template, that names a tag gets the digest regpin has
// pinned for it (the one nodes pull), by a JSONPatch; a tag never seen is pinned first, as a
// pull would (not on a dry run). Images regpin cannot pin (no upstream for the registry, a
// rejected tag, no answer within admission.timeout_ms) are admitted with a warning, or refused
// when admission.unpinned is "deny". Every review is answered within the timeout, well under
// the API server's (timeoutSeconds), so the failure policy decides only when regpin is down.
// Thread-safe.

#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "proxy/http/message.hpp"
#include "proxy/registry/service.hpp"

namespace regpin::proxy::admission {

class webhook {
public:
    webhook(const config::admission_settings& settings, registry::service& registry);

    [[nodiscard]] boost::asio::awaitable<http::reply> handle(http::incoming in);

private:
    const config::admission_settings& settings_;
    registry::service& registry_;
};

}  // namespace regpin::proxy::admission
