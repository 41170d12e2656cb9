#include "storage/rocksdb_pin_store.hpp"

#include <stdexcept>

#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include "storage/database_impl.hpp"
#include "storage/record_codec.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

namespace {

constexpr char event_prefix = 'e';
constexpr char history_prefix = 'h';

// registry \0 repository \0 tag \0 class. None of the parts can hold a NUL (validated names).
std::string repository_prefix(const std::string& registry, const std::string& repository) {
    std::string k = registry;
    k.push_back('\0');
    k += repository;
    k.push_back('\0');
    return k;
}

// History is kept per tag across accept classes: registry \0 repository \0 tag \0.
std::string history_key_prefix(const pin_key& key) {
    std::string k(1, history_prefix);
    k += repository_prefix(key.registry, key.repository);
    k += key.tag;
    k.push_back('\0');
    return k;
}

std::string event_key(std::uint64_t id) { return std::string(1, event_prefix) + big_endian(id); }

// In the meta column family, written in the batch of every change that moves them: the
// counts, and one key per pin awaiting an operator (the prefix + its encoded pin key).
const std::string count_key = "pins/count";
const std::string awaiting_count_key = "pins/awaiting-count";
const std::string awaiting_prefix = "pins/awaiting/";

std::optional<pin_key> decode_pin_key(std::string_view k) {
    auto a = k.find('\0');
    if (a == std::string_view::npos) return std::nullopt;
    auto b = k.find('\0', a + 1);
    if (b == std::string_view::npos) return std::nullopt;
    auto c = k.find('\0', b + 1);
    if (c == std::string_view::npos || c + 2 != k.size()) return std::nullopt;
    return pin_key{std::string(k.substr(0, a)), std::string(k.substr(a + 1, b - a - 1)),
                   std::string(k.substr(b + 1, c - b - 1)), static_cast<std::uint8_t>(k[c + 1])};
}

// The id after the highest key of the form prefix + 8-byte id in `cf`.
std::uint64_t next_id(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, const std::string& prefix) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, cf));
    std::string upper = prefix;
    upper.back() = static_cast<char>(upper.back() + 1);
    it->SeekForPrev(upper);
    if (!it->status().ok()) throw std::runtime_error("cannot read ids: " + it->status().ToString());
    if (!it->Valid() || !it->key().starts_with(prefix)) return 1;
    return from_big_endian(it->key().ToStringView().substr(prefix.size())) + 1;
}

}  // namespace

rocksdb_pin_store::rocksdb_pin_store(std::shared_ptr<database> db) : db_(std::move(db)) {
    next_event_id_ = next_id(db_->db(), db_->events(), std::string(1, event_prefix));
    // Outbox keys are bare ids; a prefix of "" + an upper bound of all 0xff works the same way.
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, db_->outbox()));
    it->SeekToLast();
    next_outbox_id_ = it->Valid() ? from_big_endian(it->key().ToStringView()) + 1 : 1;

    load_counts();

    // The outbox's one pass: from here on due_deliveries reads memory only.
    std::unique_ptr<rocksdb::Iterator> out(db_->db()->NewIterator({}, db_->outbox()));
    for (out->SeekToFirst(); out->Valid(); out->Next()) {
        auto e = decode_outbox(out->value().ToStringView());
        if (!e) {
            spdlog::error("pin store: outbox entry {} is unreadable; it is not delivered",
                          out->key().size() == 8 ? from_big_endian(out->key().ToStringView()) : 0);
            continue;
        }
        outbox_.put(std::move(*e));
    }
    if (!out->status().ok())
        throw std::runtime_error("cannot read the outbox: " + out->status().ToString());
}

void rocksdb_pin_store::load_counts() {
    auto* db = db_->db();
    std::string total, awaiting;
    auto a = db->Get({}, db_->meta(), count_key, &total);
    auto b = db->Get({}, db_->meta(), awaiting_count_key, &awaiting);
    for (const auto* s : {&a, &b})
        if (!s->ok() && !s->IsNotFound())
            throw std::runtime_error("cannot read the pin counts: " + s->ToString());
    if (a.ok() && b.ok() && total.size() == 8 && awaiting.size() == 8) {
        pin_count_ = from_big_endian(total);
        awaiting_count_ = from_big_endian(awaiting);
        indexed_ = true;
        return;
    }
    // A folder from before the counts were kept: one pass over the pins, and (unless opened
    // read-only) the counts and the index written, so that no later start reads the pins.
    std::size_t n = 0;
    std::vector<std::string> awaiting_keys;
    std::unique_ptr<rocksdb::Iterator> pins(db->NewIterator({}, db_->pins()));
    for (pins->SeekToFirst(); pins->Valid(); pins->Next()) {
        ++n;
        // An undecodable pin counts as a pin but not as awaiting: apply() cannot change it
        // (find() fails on it), so the counts stay in step either way.
        auto key = decode_pin_key(pins->key().ToStringView());
        if (!key) continue;
        auto p = decode_pin(*key, pins->value().ToStringView());
        if (p && awaits_operator(*p)) awaiting_keys.push_back(pins->key().ToString());
    }
    if (!pins->status().ok())
        throw std::runtime_error("cannot count pins: " + pins->status().ToString());
    pin_count_ = n;
    awaiting_count_ = awaiting_keys.size();
    if (db_->read_only()) return;  // listing by state then reads every pin
    rocksdb::WriteBatch batch;
    batch.Put(db_->meta(), count_key, big_endian(n));
    batch.Put(db_->meta(), awaiting_count_key, big_endian(awaiting_keys.size()));
    for (const auto& k : awaiting_keys) batch.Put(db_->meta(), awaiting_prefix + k, "");
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (auto s = db->Write(wo, &batch); !s.ok()) {
        // A full disk must not keep regpin from starting: counted in memory this time (no
        // change writes the counts then), and written at a later start.
        spdlog::warn(
            "pin store: the pin counts could not be written ({}); counted again at the "
            "next start",
            s.ToString());
        return;
    }
    indexed_ = true;
    if (n > 0)
        spdlog::info(
            "pin store: counted {} pins ({} awaiting an operator) once; the counts are "
            "kept from now on",
            n, awaiting_keys.size());
}

std::optional<pin_key> rocksdb_pin_store::decode_key(std::string_view k) {
    return decode_pin_key(k);
}

std::string rocksdb_pin_store::tag_prefix(const pin_key& key) {
    return history_key_prefix(key).substr(1);
}

std::string rocksdb_pin_store::encode_key(const pin_key& key) {
    std::string k = repository_prefix(key.registry, key.repository);
    k += key.tag;
    k.push_back('\0');
    k.push_back(static_cast<char>(key.accept_class));
    return k;
}

result<std::optional<pin>> rocksdb_pin_store::find(const pin_key& key, read_mode mode) const {
    auto ro = database::point_read(mode, "pin_store::find");
    std::string value;
    auto s = db_->db()->Get(ro, db_->pins(), encode_key(key), &value);
    if (s.IsNotFound()) return std::optional<pin>{};
    if (!s.ok()) return database::to_error(s, "read pin");
    auto p = decode_pin(key, value);
    if (!p) return errc::corruption;
    return std::optional<pin>{std::move(*p)};
}

result<std::vector<pin_event>> rocksdb_pin_store::apply(const std::vector<pin_change>& changes) {
    expect_may_block("pin_store::apply");
    if (auto ec = db_->check_room("write pin change")) return ec;
    std::lock_guard lock(write_mutex_);
    // The invariant: what a pin serves, and its state, never change without an event.
    if (auto bad = check_changes(changes); bad != errc::ok) return bad;
    // Every expectation is checked before anything is written: all or nothing.
    std::vector<std::optional<pin>> before;
    for (const auto& change : changes) {
        auto current = find(change.key);
        if (!current) return current.error();
        if (change.expected.has_value() != current->has_value()) return errc::conflict;
        if (change.expected && !serves_alike(*change.expected, **current)) return errc::conflict;
        before.push_back(std::move(*current));
    }

    rocksdb::WriteBatch batch;
    std::vector<pin_event> stored;
    std::vector<outbox_entry> queued;
    std::uint64_t event_id = next_event_id_;
    auto outbox_id = next_outbox_id_;
    std::size_t total = pin_count_, awaiting = awaiting_count_;
    for (std::size_t i = 0; i < changes.size(); ++i) {
        const auto& change = changes[i];
        auto key = encode_key(change.key);
        if (change.replacement)
            batch.Put(db_->pins(), key, encode_pin(*change.replacement));
        else
            batch.Delete(db_->pins(), key);
        // The compare above made `before` the stored pins: the counts move with them.
        const auto& was = before[i];
        const auto& after = change.replacement;
        if (!was && after) ++total;
        if (was && !after && total > 0) --total;
        bool awaited = was && awaits_operator(*was);
        bool awaits = after && awaits_operator(*after);
        if (awaits && !awaited) {
            ++awaiting;
            if (indexed_) batch.Put(db_->meta(), awaiting_prefix + key, "");
        } else if (awaited && !awaits) {
            if (awaiting > 0) --awaiting;
            if (indexed_) batch.Delete(db_->meta(), awaiting_prefix + key);
        }
        auto first_event = stored.size();
        for (auto e : change.events) {
            e.id = event_id++;
            batch.Put(db_->events(), event_key(e.id), encode_event(e));
            batch.Put(db_->events(), history_key_prefix(e.key) + big_endian(e.id), "");
            stored.push_back(std::move(e));
        }
        for (const auto& a : change.alerts) {
            const auto& e = stored[first_event + a.event];
            outbox_entry o{outbox_id++, e.id, a.target, 0, e.time_ms};
            batch.Put(db_->outbox(), big_endian(o.id), encode_outbox(o));
            queued.push_back(std::move(o));
        }
    }
    if (indexed_ && total != pin_count_) batch.Put(db_->meta(), count_key, big_endian(total));
    if (indexed_ && awaiting != awaiting_count_)
        batch.Put(db_->meta(), awaiting_count_key, big_endian(awaiting));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    auto s = db_->db()->Write(wo, &batch);
    if (!s.ok()) return database::to_error(s, "write pin change");
    {
        std::lock_guard held(outbox_mutex_);
        for (auto& o : queued) outbox_.put(std::move(o));
    }
    next_event_id_ = event_id;
    next_outbox_id_ = outbox_id;
    pin_count_ = total;
    awaiting_count_ = awaiting;
    return stored;
}

result<void> rocksdb_pin_store::touch_verified(const pin_key& key, std::int64_t when_ms) {
    expect_may_block("pin_store::touch_verified");
    if (auto ec = db_->check_room("touch pin")) return ec;
    std::lock_guard lock(write_mutex_);
    auto current = find(key);
    if (!current) return current.error();
    if (!*current) return {};
    auto p = std::move(**current);
    p.last_verified_ms = when_ms;
    auto s = db_->db()->Put({}, db_->pins(), encode_key(key), encode_pin(p));
    if (!s.ok()) return database::to_error(s, "touch pin");
    return {};
}

rocksdb_pin_store::key_range rocksdb_pin_store::list_range(const pin_filter& filter) {
    key_range r;
    if (!filter.registry.empty()) {
        r.prefix = filter.registry;
        r.prefix.push_back('\0');
        r.prefix += filter.repository_prefix;
    }
    // Keys compare bytewise, like std::string: start at the later of prefix and cursor.
    r.start = r.prefix;
    if (filter.after) {
        auto after = encode_key(*filter.after);
        if (after >= r.start) {
            r.start = std::move(after);
            r.after_cursor = true;
        }
    }
    return r;
}

result<std::vector<pin>> rocksdb_pin_store::list(const pin_filter& filter) const {
    expect_may_block("pin_store::list");
    std::vector<pin> out;
    auto [prefix, start, after_cursor] = list_range(filter);
    // Read a pin found by its key, if the filters that need no value pass.
    auto consider = [&](std::string_view encoded, std::string_view value) -> result<void> {
        auto key = decode_pin_key(encoded);
        if (!key) return errc::corruption;
        if (!filter.repository_prefix.empty() &&
            key->repository.rfind(filter.repository_prefix, 0) != 0)
            return {};
        if (!key_contains(*key, filter.contains)) return {};
        auto p = decode_pin(*key, value);
        if (!p) return errc::corruption;
        if (filter.state && p->state != *filter.state) return {};
        out.push_back(std::move(*p));
        return {};
    };
    if (filter.state && *filter.state != pin_state::pinned && indexed_) {
        // Pins awaiting an operator: the few keys of the index, each pin read by itself.
        std::unique_ptr<rocksdb::Iterator> index(db_->db()->NewIterator({}, db_->meta()));
        index->Seek(awaiting_prefix + start);
        for (; out.size() < filter.limit && index->Valid(); index->Next()) {
            auto k = index->key().ToStringView();
            if (!k.starts_with(awaiting_prefix)) break;
            k.remove_prefix(awaiting_prefix.size());
            if (!k.starts_with(prefix)) break;
            if (after_cursor && k == start) continue;
            std::string value;
            auto s = db_->db()->Get(database::point_read(read_mode::may_block, "list pins"),
                                    db_->pins(), k, &value);
            if (s.IsNotFound()) continue;  // changed meanwhile
            if (!s.ok()) return database::to_error(s, "list pins");
            if (auto c = consider(k, value); !c) return c.error();
        }
        if (!index->status().ok()) return database::to_error(index->status(), "list pins");
        return out;
    }
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, db_->pins()));
    it->Seek(start);
    if (after_cursor && it->Valid() && it->key() == start) it->Next();
    for (; out.size() < filter.limit && it->Valid() && it->key().starts_with(prefix); it->Next())
        if (auto c = consider(it->key().ToStringView(), it->value().ToStringView()); !c)
            return c.error();
    if (!it->status().ok()) return database::to_error(it->status(), "list pins");
    return out;
}

result<std::vector<pin>> rocksdb_pin_store::scan(const std::string& prefix) const {
    std::vector<pin> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, db_->pins()));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        auto key = decode_pin_key(it->key().ToStringView());
        if (!key) return errc::corruption;
        auto p = decode_pin(*key, it->value().ToStringView());
        if (!p) return errc::corruption;
        out.push_back(std::move(*p));
    }
    if (!it->status().ok()) return database::to_error(it->status(), "list pins");
    return out;
}

result<std::vector<pin>> rocksdb_pin_store::list_repository(const std::string& registry,
                                                            const std::string& repository) const {
    expect_may_block("pin_store::list_repository");
    return scan(repository_prefix(registry, repository));
}

result<std::vector<pin>> rocksdb_pin_store::list_tag(const std::string& registry,
                                                     const std::string& repository,
                                                     const std::string& tag) const {
    expect_may_block("pin_store::list_tag");
    return scan(repository_prefix(registry, repository) + tag + std::string(1, '\0'));
}

result<std::size_t> rocksdb_pin_store::count() const { return pin_count_.load(); }

result<std::size_t> rocksdb_pin_store::count_awaiting() const { return awaiting_count_.load(); }

result<std::vector<pin_event>> rocksdb_pin_store::history(const pin_key& key) const {
    expect_may_block("pin_store::history");
    std::vector<pin_event> out;
    auto prefix = history_key_prefix(key);
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, db_->events()));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        auto id = from_big_endian(it->key().ToStringView().substr(prefix.size()));
        auto e = event(id);
        if (!e) return e.error();
        if (*e) out.push_back(std::move(**e));
    }
    if (!it->status().ok()) return database::to_error(it->status(), "read history");
    return out;
}

result<std::optional<pin_event>> rocksdb_pin_store::event(std::uint64_t id) const {
    expect_may_block("pin_store::event");
    std::string value;
    auto s = db_->db()->Get({}, db_->events(), event_key(id), &value);
    if (s.IsNotFound()) return std::optional<pin_event>{};
    if (!s.ok()) return database::to_error(s, "read event");
    auto e = decode_event(value);
    if (!e) return errc::corruption;
    return std::optional<pin_event>{std::move(*e)};
}

result<std::uint64_t> rocksdb_pin_store::newest_event_id() const {
    return next_event_id_.load() - 1;
}

result<std::vector<pin_event>> rocksdb_pin_store::events(std::uint64_t after_id,
                                                         std::int64_t since_ms,
                                                         std::size_t limit) const {
    expect_may_block("pin_store::events");
    std::vector<pin_event> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, db_->events()));
    for (it->Seek(event_key(after_id + 1));
         out.size() < limit && it->Valid() && it->key().size() == 9 && it->key()[0] == event_prefix;
         it->Next()) {
        auto e = decode_event(it->value().ToStringView());
        if (!e) return errc::corruption;
        if (e->time_ms < since_ms) continue;
        out.push_back(std::move(*e));
    }
    if (!it->status().ok()) return database::to_error(it->status(), "read events");
    return out;
}

result<std::vector<outbox_entry>> rocksdb_pin_store::due_deliveries(std::int64_t now_ms,
                                                                    std::size_t limit) const {
    std::lock_guard held(outbox_mutex_);
    return outbox_.due(now_ms, limit);
}

result<std::size_t> rocksdb_pin_store::pending_deliveries() const {
    std::lock_guard held(outbox_mutex_);
    return outbox_.size();
}

result<void> rocksdb_pin_store::delivered(std::uint64_t outbox_id) {
    expect_may_block("pin_store::delivered");
    std::lock_guard lock(write_mutex_);
    {
        // Memory holds exactly what the column family does (every writer holds write_mutex_).
        std::lock_guard held(outbox_mutex_);
        if (!outbox_.contains(outbox_id)) return {};
    }
    auto s = db_->db()->Delete({}, db_->outbox(), big_endian(outbox_id));
    if (!s.ok()) return database::to_error(s, "remove delivered alert");
    std::lock_guard held(outbox_mutex_);
    outbox_.erase(outbox_id);
    return {};
}

result<void> rocksdb_pin_store::reschedule(const outbox_entry& entry) {
    expect_may_block("pin_store::reschedule");
    if (auto ec = db_->check_room("reschedule alert")) return ec;
    std::lock_guard lock(write_mutex_);
    {
        std::lock_guard held(outbox_mutex_);
        if (!outbox_.contains(entry.id)) return {};  // delivered meanwhile: never brought back
    }
    auto s = db_->db()->Put({}, db_->outbox(), big_endian(entry.id), encode_outbox(entry));
    if (!s.ok()) return database::to_error(s, "reschedule alert");
    std::lock_guard held(outbox_mutex_);
    outbox_.put(entry);
    return {};
}

result<std::size_t> rocksdb_pin_store::forget_before(std::int64_t cutoff_ms, std::size_t limit) {
    expect_may_block("pin_store::forget_before");
    std::lock_guard lock(write_mutex_);
    rocksdb::WriteBatch batch;
    std::size_t removed = 0;
    std::uint64_t newest = 0;
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, db_->events()));
    for (it->Seek(std::string(1, event_prefix));
         removed < limit && it->Valid() && it->key().size() == 9 && it->key()[0] == event_prefix;
         it->Next()) {
        auto id = from_big_endian(it->key().ToStringView().substr(1));
        auto e = decode_event(it->value().ToStringView());
        if (!e) return errc::corruption;
        // The newest event stays: next_id() finds the next id from it when the store reopens.
        if (e->time_ms >= cutoff_ms || id + 1 >= next_event_id_) break;
        batch.Delete(db_->events(), history_key_prefix(e->key) + big_endian(id));
        newest = id;
        ++removed;
    }
    if (!it->status().ok()) return database::to_error(it->status(), "read events");
    if (removed == 0) return std::size_t{0};
    // The removed events are every one up to `newest`: one range tombstone, which later walks
    // from the first event skip at once (point tombstones would each be stepped over until a
    // compaction drops them).
    batch.DeleteRange(db_->events(), event_key(0), event_key(newest + 1));
    std::vector<std::uint64_t> alerts;
    {
        std::lock_guard held(outbox_mutex_);
        alerts = outbox_.alerting_through(newest);
    }
    for (auto id : alerts) batch.Delete(db_->outbox(), big_endian(id));
    auto s = db_->db()->Write({}, &batch);
    if (!s.ok()) return database::to_error(s, "forget old events");
    std::lock_guard held(outbox_mutex_);
    for (auto id : alerts) outbox_.erase(id);
    return removed;
}

}  // namespace regpin::storage
