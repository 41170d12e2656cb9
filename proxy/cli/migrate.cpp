#include "proxy/cli/migrate.hpp"

#include <cstdio>
#include <limits>
#include <map>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "config/config.hpp"
#include "proxy/cli/args.hpp"
#include "proxy/etcd/pin_store.hpp"
#include "storage/clock.hpp"
#include "storage/database.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace regpin::proxy::cli {

namespace {

using storage::pin;
using storage::pin_change;
using storage::pin_event;

struct tag_content {
    std::vector<pin> pins;          // every accept class, key order
    std::vector<pin_event> events;  // the tag's history, oldest first
};

// One tag: written whole (its pins, events and pending alerts in one transaction) when etcd
// holds nothing of it; skipped when etcd holds the same pins; a conflict otherwise.
void migrate_tag(const std::string& name, const tag_content& tag,
                 const std::multimap<std::uint64_t, std::string>& alerts_by_event,
                 etcd::etcd_pin_store& to, migrate_report& report) {
    const auto& any_key = tag.pins.empty() ? tag.events.front().key : tag.pins.front().key;
    std::vector<pin> there;
    bool anything_there = false;
    for (const auto& p : tag.pins) {
        auto found = to.find(p.key);
        if (!found) throw std::runtime_error("cannot read etcd: " + found.error().message());
        if (*found) {
            anything_there = true;
            if (!storage::serves_alike(**found, p)) {
                report.conflicts.push_back(name + " (accept class " +
                                           std::to_string(p.key.accept_class) + "): etcd pins " +
                                           (*found)->manifest_digest.str() + ", this store " +
                                           p.manifest_digest.str());
                return;
            }
        }
    }
    auto history = to.history(any_key);
    if (!history) throw std::runtime_error("cannot read etcd: " + history.error().message());
    if (anything_there) {
        ++report.already;  // every class etcd holds, it holds the same way (checked above)
        return;
    }
    if (!history->empty()) {
        if (tag.pins.empty()) {
            ++report.already;  // a history-only tag copied by an earlier run
            return;
        }
        report.conflicts.push_back(name + ": etcd has its history but no pin (unpinned there?)");
        return;
    }

    // Each event goes with the pin of its accept class; events of classes with no pin (now
    // unpinned) with the first change. A pin whose class has no event gets one, saying so.
    std::vector<pin_change> changes;
    for (const auto& p : tag.pins) changes.push_back({p.key, std::nullopt, p, {}, {}});
    if (changes.empty()) changes.push_back({any_key, std::nullopt, std::nullopt, {}, {}});
    for (const auto& e : tag.events) {
        std::size_t slot = 0;
        for (std::size_t i = 0; i < changes.size(); ++i)
            if (changes[i].key.accept_class == e.key.accept_class) slot = i;
        auto& change = changes[slot];
        change.events.push_back(e);
        auto [from, to_] = alerts_by_event.equal_range(e.id);
        for (auto it = from; it != to_; ++it) {
            change.alerts.push_back({change.events.size() - 1, it->second});
            ++report.alerts;
        }
    }
    for (auto& change : changes)
        if (change.events.empty() && change.replacement) {
            pin_event e;
            e.time_ms = storage::now_ms();
            e.type = storage::event_type::imported;
            e.key = change.key;
            e.new_digest = change.replacement->manifest_digest.str();
            e.actor = "migrate";
            change.events.push_back(e);
        }
    auto applied = to.apply(changes);
    if (!applied) {
        if (applied.error() == storage::errc::conflict) {
            report.conflicts.push_back(name + ": changed in etcd during the migration");
            return;
        }
        throw std::runtime_error("cannot write to etcd: " + applied.error().message());
    }
    ++report.tags;
    report.pins += tag.pins.size();
    report.events += applied->size();
}

}  // namespace

int migrate_command(int argc, char** argv) {
    CLI::App app{
        "Copies the pins, their history and pending webhook alerts of a data folder's "
        "embedded store into etcd, for replicas that share pins (pin_store.backend etcd). "
        "Reads the data folder read-only (fine while regpin runs; stop it for a final copy). "
        "Idempotent: a tag etcd already holds the same way is skipped; one it holds "
        "differently is reported as a conflict and left alone (exit status 1). History "
        "events get new ids, in order.",
        "regpin pins migrate"};
    std::string data, to_etcd, config_file, prefix;
    app.add_option("--data", data, "the data folder to copy from")->required();
    app.add_option("--to-etcd", to_etcd, "URL[,URL...] of the etcd cluster")->required();
    app.add_option("--prefix", prefix, "key prefix in etcd (default /regpin/, or the config's)");
    app.add_option("--config", config_file,
                   "take etcd's prefix, TLS and credentials from this config's pin_store")
        ->check(CLI::ExistingFile);
    if (auto exit = parse(app, argc, argv)) return *exit;

    config::pin_store_settings ps;
    try {
        if (!config_file.empty()) ps = config::load_file(config_file).pin_store;
        ps.endpoints = config::parse_etcd_flag(to_etcd);
    } catch (const config::config_error& e) {
        std::fprintf(stderr, "regpin: invalid configuration: %s\n", e.what());
        return 2;
    }
    if (!prefix.empty()) ps.prefix = prefix;
    if (ps.prefix.back() != '/') ps.prefix.push_back('/');

    storage::open_report opened;
    auto db = storage::open_database(data, opened, storage::open_mode::read_only);
    if (!db) {
        std::fprintf(stderr, "regpin: cannot open the data folder '%s': %s\n", data.c_str(),
                     opened.error_detail.c_str());
        return 1;
    }
    storage::rocksdb_pin_store from(*db);

    spdlog::set_level(spdlog::level::warn);
    auto eo = etcd::options_from(ps);
    etcd::store_options so;
    so.prefix = ps.prefix;
    so.replica = "migrate";
    so.serving = false;
    migrate_report report;
    try {
        etcd::etcd_pin_store to(eo, so);
        if (!to.wait_loaded(std::chrono::seconds(1))) {
            std::fprintf(stderr, "regpin: etcd at %s cannot be read\n", to_etcd.c_str());
            return 1;
        }
        // Tags in key order, from the pins and from the history (tags unpinned since).
        std::map<std::string, tag_content> tags;
        storage::pin_filter all;
        all.limit = std::numeric_limits<std::size_t>::max();
        auto pins = from.list(all);
        if (!pins) throw std::runtime_error("cannot read the pins: " + pins.error().message());
        for (auto& p : *pins)
            tags[storage::rocksdb_pin_store::tag_prefix(p.key)].pins.push_back(std::move(p));
        auto events = from.events(0, 0, std::numeric_limits<std::size_t>::max());
        if (!events)
            throw std::runtime_error("cannot read the history: " + events.error().message());
        for (auto& e : *events)
            tags[storage::rocksdb_pin_store::tag_prefix(e.key)].events.push_back(std::move(e));
        auto outbox = from.due_deliveries(std::numeric_limits<std::int64_t>::max(),
                                          std::numeric_limits<std::size_t>::max());
        if (!outbox)
            throw std::runtime_error("cannot read the outbox: " + outbox.error().message());
        std::multimap<std::uint64_t, std::string> alerts_by_event;
        for (const auto& o : *outbox) alerts_by_event.emplace(o.event_id, o.target);

        for (const auto& [prefix_key, tag] : tags) {
            const auto& key = tag.pins.empty() ? tag.events.front().key : tag.pins.front().key;
            migrate_tag(storage::display_name(key), tag, alerts_by_event, to, report);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "regpin: migration stopped: %s\n", e.what());
        return 1;
    }
    std::printf(
        "migrated %zu tag(s) to etcd %s under %s: %zu pin(s), %zu event(s), %zu pending "
        "alert(s); %zu tag(s) already there; %zu conflict(s)\n",
        report.tags, to_etcd.c_str(), ps.prefix.c_str(), report.pins, report.events, report.alerts,
        report.already, report.conflicts.size());
    for (const auto& c : report.conflicts) std::printf("conflict: %s\n", c.c_str());
    return report.conflicts.empty() ? 0 : 1;
}

}  // namespace regpin::proxy::cli
