#include "proxy/pins/scheduler.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "storage/clock.hpp"

namespace regpin::proxy::pins {

namespace asio = boost::asio;
using storage::pin;
using storage::pin_key;

namespace {

std::string key_string(const pin_key& k) {
    return storage::display_name(k) + "#" + std::to_string(k.accept_class);
}

}  // namespace

struct scheduler::state : std::enable_shared_from_this<scheduler::state> {
    asio::any_io_executor ex;
    const config::settings& settings;
    const policy_table& policies;
    const upstream::upstreams& upstreams;
    store::pin_records& records;
    pins::checker& checker;

    std::mutex mutex;
    std::set<std::string> in_flight;  // pin keys being checked
    std::vector<int> running;         // checks per upstream
    std::unique_ptr<asio::steady_timer> sweep_timer;
    std::atomic<bool> stopped{false};

    state(asio::any_io_executor e, const config::settings& s, const policy_table& p,
          const upstream::upstreams& u, store::pin_records& r, pins::checker& c)
        : ex(std::move(e)),
          settings(s),
          policies(p),
          upstreams(u),
          records(r),
          checker(c),
          running(u.size(), 0) {}

    asio::awaitable<check_result> run(pin_key key, std::size_t ui) {
        co_return co_await checker.check(std::move(key), ui);
    }

    asio::awaitable<void> background_check(pin_key key, std::size_t ui);
    asio::awaitable<void> sweep();
    enum class schedule_outcome { started, not_due, in_flight, upstream_busy };
    // Starts a background check of `p` on upstream `ui` if it is due and the upstream has a
    // free slot (upstream_busy: at its concurrency limit or paused by its rate limit).
    schedule_outcome try_schedule(const pin& p, std::size_t ui);
};

asio::awaitable<void> scheduler::state::background_check(pin_key key, std::size_t ui) {
    auto self = shared_from_this();
    try {
        auto r = co_await run(key, ui);
        if (r.outcome == check_outcome::error)
            spdlog::debug("pin check {}: {}", storage::display_name(key), r.error);
    } catch (const std::exception& e) {
        spdlog::error("pin check {} failed: {}", storage::display_name(key), e.what());
    }
    std::lock_guard lock(mutex);
    in_flight.erase(key_string(key));
    --running[ui];
}

scheduler::state::schedule_outcome scheduler::state::try_schedule(const pin& p, std::size_t ui) {
    auto policy = policies.for_key(p.key);
    auto age_ms = storage::now_ms() - p.last_verified_ms;
    if (age_ms <
        std::chrono::duration_cast<std::chrono::milliseconds>(policy.revalidate_after).count())
        return schedule_outcome::not_due;
    // Replicas sharing pins (etcd) split the checks: another replica checks this one. Asked
    // only of due pins, so a request for a fresh pin never pays for the lookup.
    if (!records.checks_here(p.key)) return schedule_outcome::not_due;
    // The upstream's pull quota is nearly used up (its client noted ratelimit-remaining).
    if (upstreams.at(ui).quota_exhausted()) return schedule_outcome::upstream_busy;
    {
        std::lock_guard lock(mutex);
        if (running[ui] >= settings.checks.concurrency) return schedule_outcome::upstream_busy;
        if (!in_flight.insert(key_string(p.key)).second) return schedule_outcome::in_flight;
        ++running[ui];
    }
    asio::co_spawn(asio::make_strand(ex), background_check(p.key, ui), asio::detached);
    return schedule_outcome::started;
}

asio::awaitable<void> scheduler::state::sweep() {
    auto self = shared_from_this();
    // Each sweep reads a bounded page of pins from a cursor, so its cost does not grow with the
    // store. One cursor per upstream: pins are stored in registry order, and a single cursor
    // would spend sweeps inside one registry's pins while the other upstreams' check slots stay
    // idle. Upstreams in registry order, the order of the pins.
    std::map<std::string, std::size_t> by_registry;  // registry -> upstream index
    for (std::size_t i = 0; i < upstreams.size(); ++i)
        by_registry[upstreams.at(i).settings().registry] = i;
    std::vector<std::optional<pin_key>> cursors(upstreams.size());  // the last pin examined
    while (!stopped) {
        sweep_timer->expires_after(settings.checks.sweep_interval);
        auto [ec] = co_await sweep_timer->async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec || stopped) co_return;
        int scheduled = 0;
        for (const auto& [registry, ui] : by_registry) {
            if (scheduled >= settings.checks.sweep_batch) break;
            storage::pin_filter page;
            page.registry = registry;
            page.after = cursors[ui];
            page.limit = 4 * static_cast<std::size_t>(settings.checks.sweep_batch);
            auto listed = co_await records.list(page);
            if (!listed) continue;
            std::size_t examined = 0;
            for (const auto& p : *listed) {
                if (scheduled >= settings.checks.sweep_batch) break;
                auto outcome = try_schedule(p, ui);
                // Due, but no free slot: the next sweep starts at this pin instead of passing it
                // over until the cursor comes round again.
                if (outcome == schedule_outcome::upstream_busy) break;
                ++examined;
                if (outcome == schedule_outcome::started) ++scheduled;
            }
            if (examined == listed->size() && listed->size() < page.limit)
                cursors[ui].reset();  // the end of this registry's pins: start over
            else if (examined > 0)
                cursors[ui] = (*listed)[examined - 1].key;
        }
    }
}

scheduler::scheduler(asio::any_io_executor ex, const config::settings& settings,
                     const policy_table& policies, const upstream::upstreams& upstreams,
                     store::pin_records& records, pins::checker& checker)
    : state_(std::make_shared<state>(std::move(ex), settings, policies, upstreams, records,
                                     checker)) {}

scheduler::~scheduler() { stop(); }

void scheduler::served(const pin& p, std::size_t upstream_index) {
    if (state_->settings.offline || state_->stopped || upstream_index >= state_->upstreams.size())
        return;
    state_->try_schedule(p, upstream_index);
}

asio::awaitable<check_result> scheduler::check_now(pin_key key, std::size_t upstream_index) {
    auto st = state_;
    co_return co_await st->run(std::move(key), upstream_index);
}

void scheduler::start_sweep() {
    if (state_->settings.offline) return;
    state_->sweep_timer = std::make_unique<asio::steady_timer>(asio::make_strand(state_->ex));
    asio::co_spawn(state_->sweep_timer->get_executor(), state_->sweep(), asio::detached);
}

void scheduler::stop() {
    state_->stopped = true;
    if (state_->sweep_timer)
        asio::post(state_->sweep_timer->get_executor(),
                   [st = state_] { st->sweep_timer->cancel(); });
}

}  // namespace regpin::proxy::pins
