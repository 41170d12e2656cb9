#pragma once
// Delivers re-point alerts from the durable outbox to the configured webhooks: POST of the
// alert JSON with the event id (X-Regpin-Event-Id) for de-duplication and, when a secret is
// set, X-Regpin-Signature-256: sha256=<hex HMAC-SHA256 of the body>. Retried with exponential
// backoff (1 s doubling to 10 min) until a 2xx; entries survive restarts, so every alert is
// delivered at least once. Each receiver has its own queue (at most 64 alerts) and worker:
// one that is down (a timeout per attempt) delays only its own alerts, and its due alerts move
// to its next attempt time so the outbox scan finds the others'.

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "config/config.hpp"
#include "proxy/store/pin_records.hpp"

namespace regpin::proxy::admin {

// A webhook URL as logs may show it: scheme and host only. Paths and queries often hold
// secrets (Slack-style URLs), so they never reach a log line.
std::string display_url(const std::string& url);

// HMAC-SHA256 of `body` under `key`, lower-case hex.
std::string hmac_sha256_hex(const std::string& key, const std::string& body);

class webhook_sender {
public:
    // `delivered` is told "ok" or "failed" per attempt (metrics).
    webhook_sender(boost::asio::any_io_executor ex, const config::settings& settings,
                   store::pin_records& pins, std::function<void(std::string_view)> attempted);
    ~webhook_sender();

    void start();
    // New entries were queued: look now rather than at the next tick.
    void wake();
    void stop();

private:
    struct state;
    std::shared_ptr<state> state_;
};

}  // namespace regpin::proxy::admin
