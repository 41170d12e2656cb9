#include "proxy/admission/webhook.hpp"

#include <map>
#include <memory>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "proxy/admission/review.hpp"
#include "proxy/oci/reference.hpp"
#include "proxy/registry/replies.hpp"

namespace regpin::proxy::admission {

namespace asio = boost::asio;
using http::reply;
using nlohmann::json;

namespace {

// What became of one image: its pinned digest, or why not; a note either way when there is
// something to say.
struct outcome {
    bool done = false;
    std::optional<std::string> digest;
    std::string note;
};

// A string field of a JSON object, or "" (absent, or not a string: the API server sends
// strings, anything else is ignored rather than trusted).
std::string text_of(const json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

reply json_reply(unsigned status, const json& j) {
    reply r;
    r.status = status;
    r.body = j.dump();
    r.header("Content-Type", "application/json");
    r.route = "admission";
    return r;
}

reply fail(oci::error_code code, const std::string& message, unsigned status) {
    auto r = registry::error_reply({code, message});
    r.status = status;
    r.route = "admission";
    return r;
}

// The images of one review, resolved side by side; each writes its outcome when done (all on
// one strand), the last one wakes the review.
struct batch {
    explicit batch(asio::any_io_executor ex, std::size_t n) : timer(ex), results(n), left(n) {}
    asio::steady_timer timer;
    std::vector<outcome> results;
    std::size_t left;
};

asio::awaitable<void> resolve_one(registry::service* svc, std::shared_ptr<batch> b, std::size_t i,
                                  std::string image, bool may_pin) {
    std::optional<std::string> digest;
    std::string note;
    auto ref = oci::parse_image_name(image);
    if (!ref) {
        note = image + ": " + ref.error().message;
    } else {
        auto r = co_await svc->resolve(ref->registry, ref->repository, ref->tag, "admission",
                                       "admission", may_pin);
        if (!r) {
            note = image + ": " + r.error().message;
        } else {
            digest = r->pin.manifest_digest.str();
            if (r->pin.state == storage::pin_state::pending && r->pin.pending_digest)
                note = image + ": the upstream moved it to " + r->pin.pending_digest->str() +
                       "; regpin keeps " + *digest + " until an operator approves";
        }
    }
    b->results[i] = {true, std::move(digest), std::move(note)};
    if (--b->left == 0) b->timer.cancel();
}

// Runs on a strand of its own: the resolutions and this wait share `b` without locks.
asio::awaitable<std::vector<outcome>> resolve_all(registry::service* svc,
                                                  std::vector<std::string> images, bool may_pin,
                                                  std::chrono::milliseconds timeout) {
    auto ex = co_await asio::this_coro::executor;
    auto b = std::make_shared<batch>(ex, images.size());
    for (std::size_t i = 0; i < images.size(); ++i)
        asio::co_spawn(ex, resolve_one(svc, b, i, images[i], may_pin), asio::detached);
    if (b->left > 0) {
        // Resolutions still running at the deadline go on (a first sight pins the tag for the
        // next review); this review counts them as unpinned.
        b->timer.expires_after(timeout);
        co_await b->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    auto out = b->results;
    for (std::size_t i = 0; i < images.size(); ++i)
        if (!out[i].done)
            out[i].note =
                images[i] + ": not resolved within " + std::to_string(timeout.count()) + " ms";
    co_return out;
}

}  // namespace

webhook::webhook(const config::admission_settings& settings, registry::service& registry)
    : settings_(settings), registry_(registry) {}

asio::awaitable<reply> webhook::handle(http::incoming in) {
    if (in.method != "POST" || in.target.substr(0, in.target.find('?')) != "/mutate")
        co_return fail(oci::error_code::name_unknown,
                       "no such endpoint: the admission webhook is POST /mutate", 404);
    if (in.content_type.rfind("application/json", 0) != 0)
        co_return fail(oci::error_code::unsupported, "an AdmissionReview is application/json", 415);
    auto review = json::parse(in.body, nullptr, false);
    if (auto why = invalid_review(review); !why.empty()) {
        spdlog::warn("admission: a request from {} refused: {}", in.peer, why);
        co_return fail(oci::error_code::name_invalid, why, 400);
    }
    const auto& request = review["request"];
    std::string kind;
    if (request.contains("kind") && request["kind"].is_object())
        kind = text_of(request["kind"], "kind");
    std::vector<image_site> sites;
    if (request.contains("object")) sites = images_of(request["object"], kind);
    // Distinct tagged images, each resolved once.
    std::vector<std::string> images;
    std::map<std::string, std::size_t> index;
    for (const auto& s : sites)
        if (!names_digest(s.image) && index.emplace(s.image, images.size()).second)
            images.push_back(s.image);
    std::vector<outcome> outcomes;
    if (!images.empty()) {
        auto dry = request.find("dryRun");
        bool may_pin = !(dry != request.end() && dry->is_boolean() && dry->get<bool>());
        auto strand = asio::make_strand(co_await asio::this_coro::executor);
        auto task = resolve_all(&registry_, images, may_pin, settings_.timeout);
        outcomes = co_await asio::co_spawn(strand, std::move(task), asio::use_awaitable);
    }
    std::vector<decision> decisions;
    bool unpinned = false;
    for (const auto& s : sites) {
        if (names_digest(s.image)) continue;
        const auto& o = outcomes[index.at(s.image)];
        decisions.push_back({s.pointer, s.image, o.digest, o.note});
        if (!o.digest) unpinned = true;
    }
    bool deny = unpinned && settings_.unpinned == "deny";
    auto name = text_of(request, "name");
    std::string what = text_of(request, "namespace") + "/" + (name.empty() ? "(generated)" : name);
    auto operation = text_of(request, "operation");
    for (const auto& d : decisions) {
        if (d.digest)
            spdlog::info("admission: {} {} {}: {} -> {}", operation, kind, what, d.image,
                         *d.digest);
        else
            spdlog::warn("admission: {} {} {}: {} left unpinned{}: {}", operation, kind, what,
                         d.image, deny ? " (refused)" : "", d.note);
    }
    co_return json_reply(200, answer(review, decisions, deny));
}

}  // namespace regpin::proxy::admission
