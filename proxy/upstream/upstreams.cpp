#include "proxy/upstream/upstreams.hpp"

#include <spdlog/spdlog.h>

namespace regpin::proxy::upstream {

upstreams::upstreams(boost::asio::any_io_executor ex, const config::settings& settings,
                     observer obs) {
    for (const auto& u : settings.upstreams) {
        if (!u.tls_verify)
            spdlog::warn("upstream {}: TLS certificate verification is DISABLED", u.registry);
        clients_.push_back(std::make_unique<registry_client>(ex, u, obs));
    }
}

std::size_t upstreams::index_of(std::string_view registry) const {
    for (std::size_t i = 0; i < clients_.size(); ++i)
        if (clients_[i]->settings().registry == registry) return i;
    return npos;
}

}  // namespace regpin::proxy::upstream
