#pragma once
// When pins are checked: on request, when a served pin is older than its revalidate_after
// (never delaying the answer), and by a periodic sweep over pins nobody requested. At most one
// check per pin key runs at a time and at most pin_checks.concurrency per upstream; Docker
// Hub's ratelimit-remaining at or below the low-water mark pauses an upstream's checks.
// Thread-safe.

#include <memory>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "proxy/pins/checker.hpp"
#include "proxy/pins/policy.hpp"
#include "proxy/store/pin_records.hpp"
#include "proxy/upstream/upstreams.hpp"

namespace regpin::proxy::pins {

class scheduler {
public:
    scheduler(boost::asio::any_io_executor ex, const config::settings& settings,
              const policy_table& policies, const upstream::upstreams& upstreams,
              store::pin_records& records, pins::checker& checker);
    ~scheduler();

    // Request path: `p` was just served from upstream `upstream_index`. Starts a background
    // check when the pin is due and its upstream has a free slot; never waits. Does nothing
    // offline or once stopped.
    void served(const storage::pin& p, std::size_t upstream_index);

    // Checks one pin now (an operator's request): ignores staleness and the concurrency bound.
    [[nodiscard]] boost::asio::awaitable<check_result> check_now(storage::pin_key key,
                                                                 std::size_t upstream_index);

    // Starts the periodic sweep. Call once.
    void start_sweep();
    void stop();

private:
    struct state;
    std::shared_ptr<state> state_;
};

}  // namespace regpin::proxy::pins
