#include "proxy/upstream/upstreams.hpp"

#include <spdlog/spdlog.h>

namespace regpin::proxy::upstream {

namespace {

// regpin's own listeners, from the configuration: no upstream redirect may lead there.
std::vector<boost::asio::ip::tcp::endpoint> own_listeners(const config::settings& settings) {
    std::vector<boost::asio::ip::tcp::endpoint> out;
    for (const auto& listen : {settings.listen, settings.admin.listen}) {
        if (listen.empty()) continue;
        try {
            auto [host, port] = config::parse_host_port(listen, "listen");
            boost::system::error_code ec;
            auto a = boost::asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
            if (!ec) out.emplace_back(a, static_cast<unsigned short>(port));
        } catch (const std::exception&) {
            // The listener itself reports an unusable address.
        }
    }
    return out;
}

}  // namespace

upstreams::upstreams(boost::asio::any_io_executor ex, const config::settings& settings,
                     observer obs) {
    auto own = own_listeners(settings);
    for (const auto& u : settings.upstreams) {
        if (!u.tls_verify)
            spdlog::warn("upstream {}: TLS certificate verification is DISABLED", u.registry);
        clients_.push_back(std::make_unique<registry_client>(
            ex, u, obs, own,
            quota_policy{settings.checks.ratelimit_low_water, settings.checks.ratelimit_pause}));
    }
}

std::size_t upstreams::index_of(std::string_view registry) const {
    for (std::size_t i = 0; i < clients_.size(); ++i)
        if (clients_[i]->settings().registry == registry) return i;
    return npos;
}

}  // namespace regpin::proxy::upstream
