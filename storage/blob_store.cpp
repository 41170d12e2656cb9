#include "storage/blob_store.hpp"

#include "storage/blob_files.hpp"
#include "storage/clock.hpp"
#include "storage/database_impl.hpp"
#include "storage/record_codec.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

namespace {

// Chunk reads skip RocksDB's software CRC32c (about 1.4 GB/s on Debian's build): integrity
// comes from the SHA-256 verified at ingest.
rocksdb::ReadOptions chunk_read_options() {
    rocksdb::ReadOptions o;
    o.verify_checksums = false;
    return o;
}

}  // namespace

std::string chunk_key(const digest& d, std::uint64_t index) {
    std::string k = d.str();
    k.push_back('/');
    for (int shift = 56; shift >= 0; shift -= 8)
        k.push_back(static_cast<char>((index >> shift) & 0xff));
    return k;
}

// '/' + 1 == '0': the first key after every chunk of this digest.
std::string chunk_prefix_end(const digest& d) { return d.str() + "0"; }

blob_store::blob_store(std::shared_ptr<database> db) : db_(std::move(db)) {}

result<std::optional<blob_record>> blob_store::find(const digest& d, read_mode mode) const {
    auto ro = database::point_read(mode, "blob_store::find");
    std::string value;
    auto s = db_->db()->Get(ro, db_->blob_records(), d.str(), &value);
    if (s.IsNotFound()) return std::optional<blob_record>{};
    if (!s.ok()) return database::to_error(s, "read blob record");
    auto rec = decode_blob_record(value);
    if (!rec) return errc::corruption;
    if (!rec->complete) return std::optional<blob_record>{};
    return std::optional<blob_record>{*rec};
}

chunk::chunk() = default;
chunk::~chunk() = default;
chunk::chunk(chunk&&) noexcept = default;
chunk& chunk::operator=(chunk&&) noexcept = default;

std::string_view chunk::bytes() const {
    if (!slice_) return {};
    return {slice_->data(), slice_->size()};
}

result<void> blob_store::read_chunk(const digest& d, std::uint64_t index, chunk& out) const {
    expect_may_block("blob_store::read_chunk");
    if (!out.slice_) out.slice_ = std::make_unique<rocksdb::PinnableSlice>();
    out.slice_->Reset();
    auto s =
        db_->db()->Get(chunk_read_options(), db_->chunks(), chunk_key(d, index), out.slice_.get());
    if (s.IsNotFound()) return errc::corruption;
    if (!s.ok()) return database::to_error(s, "read blob chunk");
    return {};
}

result<std::optional<blob_store::file_span>> blob_store::locate_chunk(const digest& d,
                                                                      std::uint64_t index,
                                                                      chunk& out) const {
    if (!db_->locate_verified()) {  // the start-up probe found locating unsafe
        if (auto r = read_chunk(d, index, out); !r) return r.error();
        return std::optional<file_span>{};
    }
    auto& locations = db_->locations();
    if (auto known = locations.find(d, index)) return known;
    auto epoch = locations.epoch();
    located_read where;
    {
        locate_scope scope(where);
        if (auto r = read_chunk(d, index, out); !r) return r.error();
    }
    if (!where.found) return std::optional<file_span>{};
    out.slice_->Reset();  // not read: its bytes are unspecified
    file_span span{where.path, where.offset, where.size};
    locations.put(d, index, span, epoch);
    return std::optional<file_span>{std::move(span)};
}

result<void> blob_store::read_chunk(const digest& d, std::uint64_t index, std::string& out) const {
    chunk c;
    if (auto r = read_chunk(d, index, c); !r) return r;
    out.assign(c.bytes());
    return {};
}

result<void> blob_store::read_blob(const digest& d, const blob_record& rec,
                                   const std::function<void(std::string_view)>& sink) const {
    chunk c;
    for (std::uint64_t i = 0; i * rec.chunk_size < rec.size; ++i) {
        if (auto r = read_chunk(d, i, c); !r) return r;
        sink(c.bytes());
    }
    return {};
}

result<void> blob_store::begin(const digest& d, std::uint32_t chunk_size) {
    expect_may_block("blob_store::begin");
    if (auto ec = db_->check_room("begin blob")) return ec;
    // Chunks written from here on replace any of an earlier download whose discard failed.
    db_->locations().forget(d);
    blob_record r;
    r.chunk_size = chunk_size;
    r.created_ms = now_ms();
    auto s = db_->db()->Put({}, db_->blob_records(), d.str(), encode_blob_record(r));
    if (!s.ok()) return database::to_error(s, "begin blob");
    return {};
}

result<void> blob_store::put_chunk(const digest& d, std::uint64_t index, std::string_view bytes,
                                   durability mode) {
    expect_may_block("blob_store::put_chunk");
    if (auto ec = db_->check_room("write blob chunk")) return ec;
    rocksdb::WriteOptions wo;
    wo.disableWAL = mode == durability::unlogged;
    auto s = db_->db()->Put(wo, db_->chunks(), chunk_key(d, index),
                            rocksdb::Slice(bytes.data(), bytes.size()));
    if (!s.ok()) return database::to_error(s, "write blob chunk");
    return {};
}

result<void> blob_store::commit(const digest& d, std::uint64_t size, durability mode) {
    expect_may_block("blob_store::commit");
    if (auto ec = db_->check_room("commit blob")) return ec;
    if (mode == durability::unlogged) {
        rocksdb::FlushOptions fo;
        fo.wait = true;
        fo.allow_write_stall = true;
        auto s = db_->db()->Flush(fo, db_->chunks());
        if (!s.ok()) return database::to_error(s, "flush blob chunks");
    }
    std::string value;
    auto s = db_->db()->Get({}, db_->blob_records(), d.str(), &value);
    if (!s.ok()) return database::to_error(s, "read blob record for commit");
    auto rec = decode_blob_record(value);
    if (!rec) return errc::corruption;
    rec->size = size;
    rec->complete = true;
    s = db_->db()->Put({}, db_->blob_records(), d.str(), encode_blob_record(*rec));
    if (!s.ok()) return database::to_error(s, "commit blob");
    return {};
}

result<void> blob_store::discard(const digest& d) {
    expect_may_block("blob_store::discard");
    // Whatever fails below, no location of these chunks is kept: a download of `d` that comes
    // later writes new chunks over them.
    struct forget_after {
        database& db;
        const digest& d;
        ~forget_after() { db.locations().forget(d); }
    } forget{*db_, d};
    // Record first: once it is gone, no reader can reach the chunks.
    auto s = db_->db()->Delete({}, db_->blob_records(), d.str());
    if (!s.ok()) return database::to_error(s, "discard blob record");
    s = db_->db()->DeleteRange({}, db_->chunks(), chunk_key(d, 0), chunk_prefix_end(d));
    if (!s.ok()) return database::to_error(s, "discard blob chunks");
    return {};
}

}  // namespace regpin::storage
