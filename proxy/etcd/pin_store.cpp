#include "proxy/etcd/pin_store.hpp"

#include <algorithm>
#include <cstdio>
#include <future>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "storage/clock.hpp"
#include "storage/record_codec.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace regpin::proxy::etcd {

namespace asio = boost::asio;
using nlohmann::json;
using storage::errc;
using storage::outbox_entry;
using storage::pin;
using storage::pin_change;
using storage::pin_event;
using storage::pin_key;
using storage::result;
using codec = storage::rocksdb_pin_store;

namespace {

std::string hex16(std::uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

std::optional<std::uint64_t> from_hex16(std::string_view s) {
    if (s.size() != 16) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : s) {
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return std::nullopt;
        v = v * 16 + static_cast<std::uint64_t>(d);
    }
    return v;
}

// Operations in one transaction at most: etcd refuses more than 128 by default.
constexpr std::size_t max_txn_ops = 100;

// FNV-1a: the same on every replica and every build (the check shards depend on it).
std::uint64_t fnv1a(std::string_view s) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

// Events from key `from` on (at most `page`), decoded, with their keys; `more` when the range
// goes on past them.
struct event_page {
    std::vector<std::pair<std::string, pin_event>> events;
    bool more = false;
};
result<event_page> read_events(client& c, const std::string& from, const std::string& end,
                               std::int64_t page) {
    auto answer = c.call_blocking("/v3/kv/range", range_request(from, end, page));
    if (!answer) return answer.error();
    auto r = parse_range(*answer);
    if (!r) return errc::corruption;
    event_page out;
    for (const auto& kv : r->kvs) {
        auto e = storage::decode_event(kv.value);
        if (!e) return errc::corruption;
        out.events.emplace_back(kv.key, std::move(*e));
    }
    out.more = r->more && !r->kvs.empty();
    return out;
}

}  // namespace

std::string etcd_pin_store::pin_key_of(const std::string& encoded) const {
    return store_.prefix + "pins/" + encoded;
}

etcd_pin_store::etcd_pin_store(options client_options, store_options store)
    : store_(std::move(store)) {
    if (store_.prefix.empty() || store_.prefix.back() != '/') store_.prefix.push_back('/');
    if (store_.replica.empty()) throw std::runtime_error("etcd: the replica needs a name");
    client_ = std::make_unique<client>(std::move(client_options));
    auto ex = client_->executor();
    // The first load, waited for: a replica that starts with its pins serves them at once.
    auto first = asio::co_spawn(ex, relist(), asio::use_future);
    if (!first.get())
        spdlog::error(
            "pin store: etcd ({}) cannot be read; starting degraded: pins are unknown until it "
            "answers, so every manifest request by tag gets 503",
            client_->current_endpoint());
    asio::co_spawn(ex, follow(), asio::detached);
    if (store_.serving) asio::co_spawn(ex, keep_lease(), asio::detached);
}

etcd_pin_store::~etcd_pin_store() {
    stopping_ = true;
    // Hand webhook leadership and this replica's check shard to the others at once (when etcd
    // answers: a stop never waits out the timeouts of an unreachable cluster).
    if (auto lease = lease_.load(); lease != 0 && reachable_)
        (void)client_->call_blocking("/v3/lease/revoke", json{{"ID", std::to_string(lease)}});
    client_.reset();  // joins its thread; the coroutines above end with its loop
}

bool etcd_pin_store::wait_loaded(std::chrono::milliseconds timeout) const {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (!loaded_ && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return loaded_;
}

void etcd_pin_store::mark(bool reachable) {
    if (reachable) {
        if (!reachable_.exchange(true))
            spdlog::info("pin store: etcd reachable again ({})", client_->current_endpoint());
        return;
    }
    if (reachable_.exchange(false)) {
        unreachable_since_ms_ = storage::now_ms();
        spdlog::error(
            "pin store: etcd unreachable; pinned tags are served from memory, tags never seen "
            "get 503 until it answers");
    }
}

std::optional<std::string> etcd_pin_store::degraded() const {
    if (!loaded_) return "pin store: etcd not loaded yet (unreachable)";
    if (!reachable_)
        return "pin store: etcd unreachable for " +
               std::to_string((storage::now_ms() - unreachable_since_ms_) / 1000) +
               " s; serving the pins held in memory";
    return std::nullopt;
}

std::size_t etcd_pin_store::members() const {
    std::shared_lock lock(mutex_);
    return members_.size();
}

void etcd_pin_store::set_pin_locked(const std::string& encoded, std::optional<pin> value,
                                    std::int64_t revision) {
    auto& slot = pins_[encoded];
    if (slot.mod_revision > revision) return;  // memory already holds something newer
    if (slot.value) {
        --pin_count_;
        if (storage::awaits_operator(*slot.value)) --awaiting_count_;
    }
    if (value) {
        ++pin_count_;
        if (storage::awaits_operator(*value)) ++awaiting_count_;
    }
    slot.value = std::move(value);
    slot.mod_revision = revision;
}

void etcd_pin_store::put_outbox_locked(outbox_entry entry, std::int64_t revision, bool here) {
    // The watch reported this revision already, and whatever followed it: memory is newer.
    if (here && revision <= revision_) return;
    auto id = entry.id;
    if (auto gone = outbox_deleted_here_.find(id);
        gone != outbox_deleted_here_.end() && revision < gone->second)
        return;
    if (auto held = outbox_revision_.find(id);
        held != outbox_revision_.end() && revision < held->second)
        return;
    outbox_revision_[id] = revision;
    outbox_.put(std::move(entry));
}

void etcd_pin_store::erase_outbox_locked(std::uint64_t id, std::int64_t revision, bool here) {
    // Nothing writes an outbox id again once it is deleted (reschedule() compares that it
    // exists), so a delete needs no comparison; only a put the watch reports late does.
    outbox_.erase(id);
    outbox_revision_.erase(id);
    if (here && revision > revision_) outbox_deleted_here_[id] = revision;
}

void etcd_pin_store::absorb(const key_value& kv, bool deleted, std::int64_t revision) {
    std::unique_lock lock(mutex_);
    absorb_locked(kv, deleted, revision);
}

void etcd_pin_store::absorb_locked(const key_value& kv, bool deleted, std::int64_t revision) {
    const auto& p = store_.prefix;
    if (kv.key.size() < p.size() || kv.key.compare(0, p.size(), p) != 0) return;
    std::string_view rest = std::string_view(kv.key).substr(p.size());
    if (rest.starts_with("pins/")) {
        std::string encoded(rest.substr(5));
        if (deleted) {
            set_pin_locked(encoded, std::nullopt, revision);
            return;
        }
        auto key = codec::decode_key(encoded);
        auto value = key ? storage::decode_pin(*key, kv.value) : std::nullopt;
        if (!value) {
            spdlog::error("pin store: etcd key {} holds no readable pin; ignored",
                          std::string(rest));
            return;
        }
        set_pin_locked(encoded, std::move(value), revision);
    } else if (rest.starts_with("outbox/")) {
        auto id = from_hex16(rest.substr(7));
        if (!id) return;
        if (deleted) {
            erase_outbox_locked(*id, revision, false);
            return;
        }
        auto entry = storage::decode_outbox(kv.value);
        if (!entry || entry->id != *id) {
            spdlog::error("pin store: etcd key {} holds no readable outbox entry; ignored",
                          std::string(rest));
            return;
        }
        put_outbox_locked(std::move(*entry), revision, false);
    } else if (rest.starts_with("members/")) {
        std::string name(rest.substr(8));
        if (deleted)
            members_.erase(name);
        else
            members_[name] = kv.lease;
    } else if (rest == "leader") {
        leader_ = deleted ? std::string() : kv.value;
        leader_lease_ = deleted ? 0 : kv.lease;
    } else if (rest == "seq") {
        if (seq_.seen_at > revision) return;
        sequence s;
        s.seen_at = revision;
        if (!deleted) {
            s.mod_revision = kv.mod_revision;
            auto j = json::parse(kv.value, nullptr, false);
            if (!j.is_object()) {
                spdlog::error("pin store: etcd key {}seq is unreadable; ignored", p);
                return;
            }
            s.raw = kv.value;
            s.last_event = j.value("event", std::uint64_t{0});
            s.last_outbox = j.value("outbox", std::uint64_t{0});
        }
        seq_ = std::move(s);
    }
}

asio::awaitable<bool> etcd_pin_store::relist() {
    // Every key under the prefix but the history (events, history index): pins, outbox,
    // members, leader, seq. One revision for all pages, so the picture is consistent.
    std::vector<key_value> all;
    std::int64_t at = 0;
    const std::vector<std::string> parts{"pins/", "outbox/", "members/", "leader", "seq"};
    for (const auto& part : parts) {
        auto from = store_.prefix + part;
        const auto end = (part == "leader" || part == "seq") ? std::string() : prefix_end(from);
        for (;;) {
            auto body = range_request(from, end, end.empty() ? 0 : 1000, at);
            auto path = std::string("/v3/kv/range");
            auto answer = co_await client_->call(path, body);
            if (!answer) {
                mark(false);
                co_return false;
            }
            auto r = parse_range(*answer);
            if (!r) co_return false;
            if (at == 0) at = r->revision;
            for (auto& kv : r->kvs) all.push_back(std::move(kv));
            if (!r->more || end.empty() || all.empty()) break;
            from = all.back().key + std::string(1, '\0');
        }
    }
    {
        std::unique_lock lock(mutex_);
        pins_.clear();
        pin_count_ = awaiting_count_ = 0;
        outbox_.clear();
        outbox_revision_.clear();
        outbox_deleted_here_.clear();
        members_.clear();
        leader_.clear();
        leader_lease_ = 0;
        seq_ = {};
        for (const auto& kv : all) absorb_locked(kv, false, kv.mod_revision);
        revision_ = at;
    }
    mark(true);
    if (!loaded_.exchange(true))
        spdlog::info("pin store: {} pins loaded from etcd at revision {} ({})", pin_count_, at,
                     client_->current_endpoint());
    co_return true;
}

asio::awaitable<void> etcd_pin_store::follow() {
    asio::steady_timer pause(client_->executor());
    while (!stopping_) {
        if (!loaded_ || relist_needed_) {
            if (co_await relist()) {
                relist_needed_ = false;
            } else {
                pause.expires_after(std::chrono::seconds(1));
                co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
                continue;
            }
        }
        json create{{"key", b64(store_.prefix)},
                    {"range_end", b64(prefix_end(store_.prefix))},
                    {"start_revision", std::to_string(revision_ + 1)}};
        bool compacted = false;
        auto on_message = [this, &compacted](const json& r) {
            if (int_field(r, "compact_revision") > 0) {
                compacted = true;
                return false;
            }
            if (r.value("canceled", false)) return false;
            mark(true);
            std::int64_t newest = 0;
            if (auto evs = r.find("events"); evs != r.end() && evs->is_array()) {
                std::unique_lock lock(mutex_);
                for (const auto& e : *evs) {
                    auto kv = e.contains("kv") ? parse_kv(e["kv"]) : std::nullopt;
                    if (!kv) continue;
                    bool deleted = e.value("type", "") == "DELETE";
                    absorb_locked(*kv, deleted, kv->mod_revision);
                    newest = std::max(newest, kv->mod_revision);
                }
                // Under the lock: a local write compares its revision with revision_ to know
                // whether memory already holds what it wrote.
                if (newest > revision_) revision_ = newest;
                std::erase_if(outbox_deleted_here_,
                              [this](const auto& d) { return d.second <= revision_; });
            }
            return !stopping_.load();
        };
        bool opened = co_await client_->watch(create, on_message);
        if (compacted) {
            spdlog::warn("pin store: etcd compacted past revision {}; reloading every pin",
                         revision_.load());
            relist_needed_ = true;
            continue;
        }
        if (!opened) {
            mark(false);
            pause.expires_after(std::chrono::seconds(1));
            co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
}

asio::awaitable<void> etcd_pin_store::keep_lease() {
    asio::steady_timer pause(client_->executor());
    const auto ttl = store_.lease_ttl.count();
    const auto member = store_.prefix + "members/" + store_.replica;
    const auto leader = store_.prefix + "leader";
    const std::string grant_path = "/v3/lease/grant", keep_path = "/v3/lease/keepalive",
                      txn_path = "/v3/kv/txn";
    while (!stopping_) {
        auto lease = lease_.load();
        if (lease == 0) {
            json body{{"TTL", std::to_string(ttl)}};
            auto granted = co_await client_->call(grant_path, body);
            if (granted) lease = int_field(*granted, "ID");
            if (lease != 0) {
                // Join the members (check shards) under the new lease.
                json put{{"success", json::array({put_op(member, store_.replica, lease)})}};
                auto joined = co_await client_->call(txn_path, put);
                if (joined) lease_ = lease;
            }
        } else {
            json body{{"ID", std::to_string(lease)}};
            auto kept = co_await client_->call(keep_path, body);
            if (!kept) {
                leading_ = false;
                mark(false);
            } else if (int_field(kept->contains("result") ? (*kept)["result"] : *kept, "TTL") ==
                       0) {
                spdlog::warn("pin store: this replica's etcd lease expired; joining again");
                leading_ = false;
                lease_ = 0;
                continue;
            } else {
                mark(true);
            }
        }
        lease = lease_.load();
        if (lease != 0 && reachable_) {
            std::string current;
            std::int64_t current_lease = 0;
            {
                std::shared_lock lock(mutex_);
                current = leader_;
                current_lease = leader_lease_;
            }
            if (current.empty()) {
                // Nobody delivers webhooks: take it, if nobody else does first.
                json txn{{"compare", json::array({compare_number(leader, "CREATE", 0)})},
                         {"success", json::array({put_op(leader, store_.replica, lease)})},
                         {"failure", json::array({range_op(leader)})}};
                auto taken = co_await client_->call(txn_path, txn);
                if (taken)
                    if (auto t = parse_txn(*taken)) {
                        std::unique_lock lock(mutex_);
                        if (t->succeeded) {
                            absorb_locked({leader, store_.replica, 0, t->revision, lease}, false,
                                          t->revision);
                        } else if (!t->ranges.empty() && !t->ranges[0].kvs.empty()) {
                            const auto& kv = t->ranges[0].kvs[0];
                            absorb_locked(kv, false, kv.mod_revision);
                        }
                        current = leader_;
                        current_lease = leader_lease_;
                    }
            }
            bool lead = current == store_.replica && current_lease == lease;
            if (lead != leading_.exchange(lead))
                spdlog::info("pin store: this replica ({}) {} webhook deliveries", store_.replica,
                             lead ? "now sends" : "no longer sends");
        }
        pause.expires_after(std::chrono::seconds(std::max<std::int64_t>(1, ttl / 3)));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

bool etcd_pin_store::checks_here(const pin_key& key) const {
    std::shared_lock lock(mutex_);
    if (members_.empty() || !members_.contains(store_.replica)) return true;
    auto n = members_.size();
    auto slot = fnv1a(codec::encode_key(key)) % n;
    auto it = members_.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(slot));
    return it->first == store_.replica;
}

result<std::optional<pin>> etcd_pin_store::find(const pin_key& key, storage::read_mode) const {
    if (!loaded_) return errc::unavailable;
    std::shared_lock lock(mutex_);
    auto it = pins_.find(codec::encode_key(key));
    if (it == pins_.end() || !it->second.value) return std::optional<pin>{};
    return std::optional<pin>{*it->second.value};
}

result<void> etcd_pin_store::refresh(const std::vector<std::string>& encoded) {
    json ops = json::array();
    for (const auto& e : encoded) ops.push_back(range_op(pin_key_of(e)));
    ops.push_back(range_op(store_.prefix + "seq"));
    auto answer = client_->call_blocking("/v3/kv/txn", json{{"success", ops}});
    if (!answer) {
        if (answer.error() == errc::unavailable) mark(false);
        return answer.error();
    }
    auto t = parse_txn(*answer);
    if (!t || t->ranges.size() != encoded.size() + 1) return errc::corruption;
    std::unique_lock lock(mutex_);
    absorb_read_back_locked(encoded, *t);
    return {};
}

void etcd_pin_store::absorb_read_back_locked(const std::vector<std::string>& encoded,
                                             const txn_result& t) {
    if (t.ranges.size() != encoded.size() + 1) return;
    for (std::size_t i = 0; i < encoded.size(); ++i) {
        if (t.ranges[i].kvs.empty())
            set_pin_locked(encoded[i], std::nullopt, t.revision);
        else
            absorb_locked(t.ranges[i].kvs[0], false, t.ranges[i].kvs[0].mod_revision);
    }
    if (t.ranges.back().kvs.empty())
        absorb_locked({store_.prefix + "seq", "", 0, 0, 0}, true, t.revision);
    else
        absorb_locked(t.ranges.back().kvs[0], false, t.ranges.back().kvs[0].mod_revision);
}

result<std::vector<pin_event>> etcd_pin_store::apply(const std::vector<pin_change>& changes) {
    if (auto bad = storage::check_changes(changes); bad != errc::ok) return bad;
    std::vector<std::string> encoded;
    for (const auto& change : changes) encoded.push_back(codec::encode_key(change.key));
    if (!loaded_) return errc::unavailable;
    const std::string txn_path = "/v3/kv/txn";
    bool fresh = false;  // memory was read from etcd during this call
    for (int attempt = 0; attempt < 64; ++attempt) {
        std::vector<cached> current;
        sequence seq;
        {
            std::shared_lock lock(mutex_);
            for (const auto& e : encoded) {
                auto it = pins_.find(e);
                current.push_back(it == pins_.end() ? cached{} : it->second);
            }
            seq = seq_;
        }
        bool holds = true;
        for (std::size_t i = 0; i < changes.size(); ++i) {
            const auto& want = changes[i].expected;
            const auto& have = current[i].value;
            if (want.has_value() != have.has_value() ||
                (want && !storage::serves_alike(*want, *have)))
                holds = false;
        }
        if (!holds) {
            // Memory may lag the watch by a moment: only etcd's own answer is a conflict.
            if (fresh) return errc::conflict;
            if (auto r = refresh(encoded); !r) return r.error();
            fresh = true;
            continue;
        }

        json compares = json::array(), success = json::array(), failure = json::array();
        for (std::size_t i = 0; i < changes.size(); ++i) {
            auto k = pin_key_of(encoded[i]);
            compares.push_back(compare_number(
                k, "MOD", current[i].value ? current[i].mod_revision : std::int64_t{0}));
            failure.push_back(range_op(k));
        }
        const auto seq_key = store_.prefix + "seq";
        compares.push_back(compare_number(seq_key, "MOD", seq.mod_revision));
        failure.push_back(range_op(seq_key));

        std::vector<pin_event> stored;
        std::vector<outbox_entry> queued;
        auto event_id = seq.last_event + 1;
        auto outbox_id = seq.last_outbox + 1;
        for (std::size_t i = 0; i < changes.size(); ++i) {
            const auto& change = changes[i];
            auto k = pin_key_of(encoded[i]);
            if (change.replacement)
                success.push_back(put_op(k, storage::encode_pin(*change.replacement)));
            else
                success.push_back(delete_op(k));
            auto first_event = stored.size();
            for (auto e : change.events) {
                e.id = event_id++;
                success.push_back(
                    put_op(store_.prefix + "events/" + hex16(e.id), storage::encode_event(e)));
                success.push_back(put_op(
                    store_.prefix + "history/" + codec::tag_prefix(e.key) + hex16(e.id), ""));
                stored.push_back(std::move(e));
            }
            for (const auto& a : change.alerts) {
                const auto& e = stored[first_event + a.event];
                outbox_entry o{outbox_id++, e.id, a.target, 0, e.time_ms};
                success.push_back(
                    put_op(store_.prefix + "outbox/" + hex16(o.id), storage::encode_outbox(o)));
                queued.push_back(std::move(o));
            }
        }
        // The sequence names this write: after a lost answer, reading it says whether it landed.
        auto tag = store_.replica + "/" + std::to_string(++txn_counter_) + "/" +
                   std::to_string(storage::now_ms());
        auto seq_value =
            json{{"event", event_id - 1}, {"outbox", outbox_id - 1}, {"by", tag}}.dump();
        success.push_back(put_op(seq_key, seq_value));

        json body{{"compare", compares}, {"success", success}, {"failure", failure}};
        auto answer = client_->call_blocking(txn_path, body);
        if (!answer) {
            if (answer.error() != errc::unavailable) return answer.error();
            mark(false);
            // The answer was lost, not necessarily the write.
            if (auto r = refresh(encoded); !r) return errc::unavailable;
            std::shared_lock lock(mutex_);
            if (seq_.raw == seq_value) return stored;
            fresh = true;
            continue;
        }
        mark(true);
        auto t = parse_txn(*answer);
        if (!t) return errc::corruption;
        std::unique_lock lock(mutex_);
        if (t->succeeded) {
            for (std::size_t i = 0; i < changes.size(); ++i)
                set_pin_locked(encoded[i], changes[i].replacement, t->revision);
            for (auto& o : queued) put_outbox_locked(std::move(o), t->revision, true);
            absorb_locked({seq_key, seq_value, 0, t->revision, 0}, false, t->revision);
            return stored;
        }
        // Something changed meanwhile: take what etcd holds now and try again (only the
        // sequence moved: another tag's write; a pin moved: the expectation decides).
        absorb_read_back_locked(encoded, *t);
        fresh = true;
    }
    return errc::conflict;
}

result<void> etcd_pin_store::touch_verified(const pin_key& key, std::int64_t when_ms) {
    auto encoded = codec::encode_key(key);
    cached c;
    {
        std::shared_lock lock(mutex_);
        auto it = pins_.find(encoded);
        if (it == pins_.end() || !it->second.value) return {};
        c = it->second;
    }
    c.value->last_verified_ms = when_ms;
    auto k = pin_key_of(encoded);
    json body{{"compare", json::array({compare_number(k, "MOD", c.mod_revision)})},
              {"success", json::array({put_op(k, storage::encode_pin(*c.value))})}};
    auto answer = client_->call_blocking("/v3/kv/txn", body);
    if (!answer) return {};  // not worth an error: at worst an early re-check
    if (auto t = parse_txn(*answer); t && t->succeeded) {
        std::unique_lock lock(mutex_);
        set_pin_locked(encoded, c.value, t->revision);
    }
    return {};
}

result<std::vector<pin>> etcd_pin_store::list(const storage::pin_filter& filter) const {
    if (!loaded_) return errc::unavailable;
    std::vector<pin> out;
    auto [prefix, start, after_cursor] = codec::list_range(filter);
    std::shared_lock lock(mutex_);
    auto it = pins_.lower_bound(start);
    if (after_cursor && it != pins_.end() && it->first == start) ++it;
    for (; out.size() < filter.limit && it != pins_.end() && it->first.starts_with(prefix); ++it) {
        if (!it->second.value) continue;
        const auto& p = *it->second.value;
        if (!filter.repository_prefix.empty() &&
            p.key.repository.rfind(filter.repository_prefix, 0) != 0)
            continue;
        if (filter.state && p.state != *filter.state) continue;
        if (!storage::key_contains(p.key, filter.contains)) continue;
        out.push_back(p);
    }
    return out;
}

result<std::vector<pin>> etcd_pin_store::list_repository(const std::string& registry,
                                                         const std::string& repository) const {
    return list_prefix(registry + std::string(1, '\0') + repository + std::string(1, '\0'));
}

result<std::vector<pin>> etcd_pin_store::list_tag(const std::string& registry,
                                                  const std::string& repository,
                                                  const std::string& tag) const {
    return list_prefix(registry + std::string(1, '\0') + repository + std::string(1, '\0') + tag +
                       std::string(1, '\0'));
}

result<std::vector<pin>> etcd_pin_store::list_prefix(const std::string& prefix) const {
    if (!loaded_) return errc::unavailable;
    std::vector<pin> out;
    std::shared_lock lock(mutex_);
    for (auto it = pins_.lower_bound(prefix); it != pins_.end() && it->first.starts_with(prefix);
         ++it)
        if (it->second.value) out.push_back(*it->second.value);
    return out;
}

result<std::size_t> etcd_pin_store::count() const {
    std::shared_lock lock(mutex_);
    return pin_count_;
}

result<std::size_t> etcd_pin_store::count_awaiting() const {
    std::shared_lock lock(mutex_);
    return awaiting_count_;
}

result<std::optional<pin_event>> etcd_pin_store::event(std::uint64_t id) const {
    auto answer = client_->call_blocking("/v3/kv/range",
                                         range_request(store_.prefix + "events/" + hex16(id)));
    if (!answer) return answer.error();
    auto r = parse_range(*answer);
    if (!r) return errc::corruption;
    if (r->kvs.empty()) return std::optional<pin_event>{};
    auto e = storage::decode_event(r->kvs[0].value);
    if (!e) return errc::corruption;
    return std::optional<pin_event>{std::move(*e)};
}

result<std::vector<pin_event>> etcd_pin_store::history(const pin_key& key) const {
    auto prefix = store_.prefix + "history/" + codec::tag_prefix(key);
    auto answer = client_->call_blocking(
        "/v3/kv/range", range_request(prefix, prefix_end(prefix), 0, 0, /*keys_only=*/true));
    if (!answer) return answer.error();
    auto r = parse_range(*answer);
    if (!r) return errc::corruption;
    std::vector<pin_event> out;
    // The events themselves, up to 100 per transaction (etcd's default limit is 128 ops).
    for (std::size_t i = 0; i < r->kvs.size(); i += 100) {
        json ops = json::array();
        for (std::size_t j = i; j < std::min(r->kvs.size(), i + 100); ++j) {
            auto id = from_hex16(std::string_view(r->kvs[j].key).substr(prefix.size()));
            if (!id) return errc::corruption;
            ops.push_back(range_op(store_.prefix + "events/" + hex16(*id)));
        }
        auto events = client_->call_blocking("/v3/kv/txn", json{{"success", ops}});
        if (!events) return events.error();
        auto t = parse_txn(*events);
        if (!t) return errc::corruption;
        for (const auto& range : t->ranges)
            for (const auto& kv : range.kvs) {
                auto e = storage::decode_event(kv.value);
                if (!e) return errc::corruption;
                out.push_back(std::move(*e));
            }
    }
    return out;
}

result<std::uint64_t> etcd_pin_store::newest_event_id() const {
    if (!loaded_) return errc::unavailable;
    std::shared_lock lock(mutex_);
    return seq_.last_event;  // kept by the watch, like the pins
}

result<std::vector<pin_event>> etcd_pin_store::events(std::uint64_t after_id, std::int64_t since_ms,
                                                      std::size_t limit) const {
    std::vector<pin_event> out;
    const auto base = store_.prefix + "events/";
    const auto end = prefix_end(base);
    auto from = base + hex16(after_id + 1);
    while (out.size() < limit) {
        auto page = static_cast<std::int64_t>(std::min<std::size_t>(500, limit - out.size()));
        auto r = read_events(*client_, from, end, page);
        if (!r) return r.error();
        for (auto& [key, e] : r->events)
            if (e.time_ms >= since_ms && out.size() < limit) out.push_back(std::move(e));
        if (!r->more) break;
        from = r->events.back().first + std::string(1, '\0');
    }
    return out;
}

result<std::vector<outbox_entry>> etcd_pin_store::due_deliveries(std::int64_t now_ms,
                                                                 std::size_t limit) const {
    if (!leading_) return std::vector<outbox_entry>{};
    if (!reachable_) return errc::unavailable;
    std::shared_lock lock(mutex_);
    return outbox_.due(now_ms, limit);
}

result<std::size_t> etcd_pin_store::pending_deliveries() const {
    std::shared_lock lock(mutex_);
    return outbox_.size();
}

result<void> etcd_pin_store::delivered(std::uint64_t outbox_id) {
    auto k = store_.prefix + "outbox/" + hex16(outbox_id);
    auto answer = client_->call_blocking("/v3/kv/deleterange", json{{"key", b64(k)}});
    if (!answer) {
        if (answer.error() == errc::unavailable) mark(false);
        return answer.error();
    }
    std::int64_t revision = 0;
    if (auto h = answer->find("header"); h != answer->end()) revision = int_field(*h, "revision");
    std::unique_lock lock(mutex_);
    erase_outbox_locked(outbox_id, revision, true);
    return {};
}

result<void> etcd_pin_store::reschedule(const outbox_entry& entry) {
    auto k = store_.prefix + "outbox/" + hex16(entry.id);
    // Only while it is there: a delivered entry is never brought back.
    json body{{"compare", json::array({compare_number(k, "VERSION", 0, "GREATER")})},
              {"success", json::array({put_op(k, storage::encode_outbox(entry))})}};
    auto answer = client_->call_blocking("/v3/kv/txn", body);
    if (!answer) return answer.error();
    if (auto t = parse_txn(*answer); t && t->succeeded) {
        std::unique_lock lock(mutex_);
        put_outbox_locked(entry, t->revision, true);
    }
    return {};
}

result<std::size_t> etcd_pin_store::forget_before(std::int64_t cutoff_ms, std::size_t limit) {
    if (!loaded_) return errc::unavailable;
    std::uint64_t last_event = 0;
    {
        std::shared_lock lock(mutex_);
        last_event = seq_.last_event;
    }
    // The events to forget, a page at a time from the first (keys sort by id).
    std::vector<std::string> event_keys, history_keys;
    std::uint64_t newest = 0;
    const auto base = store_.prefix + "events/";
    const auto end = prefix_end(base);
    auto from = base;
    bool reached = false;  // an event to keep: the cutoff, or the newest event
    while (!reached && event_keys.size() < limit) {
        // Small pages: most hourly calls read one and find its first event too young.
        auto page = static_cast<std::int64_t>(
            std::min<std::size_t>(max_txn_ops, limit - event_keys.size()));
        auto r = read_events(*client_, from, end, page);
        if (!r) return r.error();
        for (auto& [key, e] : r->events) {
            // P seq keeps the ids, but the newest event stays here too: one contract for both
            // stores.
            if (e.time_ms >= cutoff_ms || e.id >= last_event) {
                reached = true;
                break;
            }
            event_keys.push_back(key);
            history_keys.push_back(store_.prefix + "history/" + codec::tag_prefix(e.key) +
                                   hex16(e.id));
            newest = e.id;
        }
        if (!r->more) break;
        from = r->events.back().first + std::string(1, '\0');
    }
    if (event_keys.empty()) return std::size_t{0};
    // Alerts of events this old are known here: they were written with their events, long
    // before (the watch reported them).
    std::vector<std::uint64_t> alerts;
    {
        std::shared_lock lock(mutex_);
        alerts = outbox_.alerting_through(newest);
    }
    std::vector<std::string> keys;
    for (auto id : alerts) keys.push_back(store_.prefix + "outbox/" + hex16(id));
    keys.insert(keys.end(), history_keys.begin(), history_keys.end());
    keys.insert(keys.end(), event_keys.begin(), event_keys.end());
    for (std::size_t i = 0; i < keys.size(); i += max_txn_ops) {
        auto stop = std::min(keys.size(), i + max_txn_ops);
        json ops = json::array();
        for (auto j = i; j < stop; ++j) ops.push_back(delete_op(keys[j]));
        auto answer = client_->call_blocking("/v3/kv/txn", json{{"success", ops}});
        if (!answer) {
            if (answer.error() == errc::unavailable) mark(false);
            return answer.error();
        }
        if (i >= alerts.size()) continue;
        auto t = parse_txn(*answer);
        std::unique_lock lock(mutex_);
        for (auto j = i; j < std::min(stop, alerts.size()); ++j)
            erase_outbox_locked(alerts[j], t ? t->revision : 0, true);
    }
    return event_keys.size();
}

}  // namespace regpin::proxy::etcd
