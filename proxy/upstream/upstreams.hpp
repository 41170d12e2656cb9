#pragma once
// The configured upstream registries, one registry_client each, in configuration order (the
// router's upstream_index is an index here).

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "config/config.hpp"
#include "proxy/upstream/registry_client.hpp"

namespace regpin::proxy::upstream {

class upstreams {
public:
    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    // Warns in the log about upstreams with TLS verification off. Throws like registry_client.
    upstreams(boost::asio::any_io_executor ex, const config::settings& settings,
              observer obs = nullptr);

    std::size_t size() const { return clients_.size(); }
    registry_client& at(std::size_t index) const { return *clients_.at(index); }
    // The index of the upstream serving `registry` (its canonical name), or npos.
    std::size_t index_of(std::string_view registry) const;

private:
    std::vector<std::unique_ptr<registry_client>> clients_;
};

}  // namespace regpin::proxy::upstream
