#include "proxy/pins/actions.hpp"

#include "proxy/cache/fetch_through.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/pins/policy.hpp"
#include "storage/clock.hpp"

namespace regpin::proxy::pins {

namespace asio = boost::asio;
using oci::error_code;
using storage::pin;
using storage::pin_event;

namespace {

oci::error no_pin(const pin_target& t) {
    return {error_code::manifest_unknown,
            "no pin for " + t.registry + "/" + t.repository + ":" + t.tag};
}

pin_event operator_event(storage::event_type type, const storage::pin_key& key,
                         std::string old_digest, std::string new_digest, const std::string& actor) {
    return {0,
            storage::now_ms(),
            type,
            key,
            std::move(old_digest),
            std::move(new_digest),
            actor,
            "",
            "",
            ""};
}

}  // namespace

actions::actions(const config::settings& settings, upstream::upstreams& upstreams,
                 store::pin_records& records, cache::manifest_fetcher& manifests,
                 pins::writer& writer)
    : settings_(settings),
      upstreams_(upstreams),
      records_(records),
      manifests_(manifests),
      writer_(writer) {}

asio::awaitable<oci::result<storage::manifest>> actions::manifest(std::size_t ui,
                                                                  const std::string& repository,
                                                                  const storage::digest& d) {
    const std::string accept = oci::accept_for_class(oci::accepts_all);
    const std::string repo = repository;
    auto got = co_await manifests_.by_digest(upstreams_.at(ui), repo, d, accept,
                                             settings_.manifest_max_bytes);
    if (!got) co_return got.error();
    co_return std::move(got->manifest);
}

asio::awaitable<actions::events> actions::commit(std::vector<storage::pin_change> changes,
                                                 std::vector<skipped_class> skipped) {
    auto applied = co_await writer_.commit(std::move(changes));
    if (!applied) {
        if (applied.error() == storage::errc::conflict)
            co_return oci::error{error_code::denied, "the pin changed meanwhile; try again"};
        co_return cache::storage_error("writing a pin change");
    }
    co_return done{std::move(*applied), std::move(skipped)};
}

asio::awaitable<actions::events> actions::approve(pin_target t, std::optional<std::string> digest,
                                                  std::string actor) {
    auto ui = upstreams_.index_of(t.registry);
    auto current = co_await records_.list_tag(t.registry, t.repository, t.tag);
    if (!current) co_return cache::storage_error("reading pins");
    if (current->empty() || ui == upstream::upstreams::npos) co_return no_pin(t);
    std::optional<storage::digest> chosen;
    if (digest) {
        chosen = storage::digest::parse(*digest);
        if (!chosen)
            co_return oci::error{error_code::digest_invalid, "invalid digest '" + *digest + "'"};
    }
    std::vector<storage::pin_change> changes;
    std::vector<skipped_class> skipped;
    for (const auto& p : *current) {
        auto target = chosen ? chosen : p.pending_digest;
        if (!target) {
            skipped.push_back({p.key.accept_class, "nothing is pending"});
            continue;
        }
        auto m = co_await manifest(ui, t.repository, *target);
        if (!m) co_return m.error();
        if (!oci::accept_class_admits(p.key.accept_class, m->media_type)) {
            skipped.push_back({p.key.accept_class, "its clients do not accept " + m->media_type});
            continue;
        }
        auto np = decide(p, *target, *m, storage::now_ms());
        storage::pin_change change{p.key, p, np};
        change.events.push_back(operator_event(storage::event_type::approved, p.key,
                                               p.manifest_digest.str(), target->str(), actor));
        changes.push_back(std::move(change));
    }
    if (changes.empty())
        co_return oci::error{error_code::denied,
                             chosen ? "no accept class of " + t.registry + "/" + t.repository +
                                          ":" + t.tag + " admits " + chosen->str()
                                    : "nothing is pending for " + t.registry + "/" + t.repository +
                                          ":" + t.tag + ": give the digest to approve"};
    co_return co_await commit(std::move(changes), std::move(skipped));
}

asio::awaitable<actions::events> actions::unpin(pin_target t, std::string actor) {
    auto current = co_await records_.list_tag(t.registry, t.repository, t.tag);
    if (!current) co_return cache::storage_error("reading pins");
    if (current->empty()) co_return no_pin(t);
    std::vector<storage::pin_change> changes;
    for (const auto& p : *current) {
        storage::pin_change change{p.key, p, std::nullopt};
        change.events.push_back(operator_event(storage::event_type::unpinned, p.key,
                                               p.manifest_digest.str(), "", actor));
        changes.push_back(std::move(change));
    }
    std::vector<skipped_class> none;
    co_return co_await commit(std::move(changes), std::move(none));
}

asio::awaitable<actions::events> actions::set(pin_target t, std::string digest, std::string actor) {
    auto ui = upstreams_.index_of(t.registry);
    if (ui == upstream::upstreams::npos)
        co_return oci::error{error_code::name_unknown, "no upstream for registry " + t.registry};
    auto target = storage::digest::parse(digest);
    if (!target)
        co_return oci::error{error_code::digest_invalid, "invalid digest '" + digest + "'"};
    auto m = co_await manifest(ui, t.repository, *target);
    if (!m) co_return m.error();
    auto current = co_await records_.list_tag(t.registry, t.repository, t.tag);
    if (!current) co_return cache::storage_error("reading pins");
    std::vector<std::optional<pin>> befores(current->begin(), current->end());
    if (befores.empty()) befores.push_back(std::nullopt);
    std::vector<storage::pin_change> changes;
    std::vector<skipped_class> skipped;
    for (const auto& before : befores) {
        // A new pin is made for the accept class every common client sends (all four types).
        storage::pin_key key =
            before ? before->key
                   : storage::pin_key{t.registry, t.repository, t.tag, oci::accepts_all};
        if (!oci::accept_class_admits(key.accept_class, m->media_type)) {
            skipped.push_back({key.accept_class, "its clients do not accept " + m->media_type});
            continue;
        }
        auto np = decide(before ? *before : pin{key, *target}, *target, *m, storage::now_ms());
        if (!before) np.first_seen_ms = np.last_verified_ms;
        storage::pin_change change{key, before, np};
        change.events.push_back(operator_event(storage::event_type::set, key,
                                               before ? before->manifest_digest.str() : "",
                                               target->str(), actor));
        changes.push_back(std::move(change));
    }
    if (changes.empty())
        co_return oci::error{error_code::denied, "no accept class of " + t.registry + "/" +
                                                     t.repository + ":" + t.tag + " admits " +
                                                     m->media_type + " (" + target->str() + ")"};
    co_return co_await commit(std::move(changes), std::move(skipped));
}

}  // namespace regpin::proxy::pins
