#include "storage/database_impl.hpp"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>

#include <rocksdb/options.h>
#include <rocksdb/utilities/checkpoint.h>
#include <spdlog/spdlog.h>

#include "storage/blob_files.hpp"
#include "storage/blob_store.hpp"
#include "storage/record_codec.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

namespace {

const char* const cf_names[] = {rocksdb::kDefaultColumnFamilyName.c_str(),
                                "blob_chunks",
                                "blob_records",
                                "manifests",
                                "pins",
                                "events",
                                "outbox",
                                "referrers",
                                "blob_access",
                                "audit"};

rocksdb::ColumnFamilyOptions chunk_options() {
    rocksdb::ColumnFamilyOptions o;
    // Chunks are large, immutable and already compressed (layers are gzip/zstd): keep them in
    // blob files so compaction never rewrites them.
    o.enable_blob_files = true;
    o.min_blob_size = 4096;
    o.blob_file_size = 256ull << 20;
    o.blob_compression_type = rocksdb::kNoCompression;
    o.compression = rocksdb::kNoCompression;
    // No blob garbage collection: with it, a compaction relocates every live blob of the
    // oldest quarter of blob files it touches, and downloads running side by side make
    // overlapping flushes, so compactions come often. With 4 GiB cached, a 500 MiB containerd
    // pull made 5 compactions rewrite 3.4 GiB of old blobs (bench/RESULTS.md). Verified blobs
    // are never deleted; the only garbage is chunks of failed downloads that a flush reached
    // before the discard, which stays until blob eviction brings collection back.
    o.enable_blob_garbage_collection = false;
    // Memtables bound memory: 8 MiB each, three at most (24 MiB). With two, a cold 1 GiB
    // download stopped for the flush ~500 times (RocksDB's "Stopping writes"); three, with two
    // flush threads, took it from ~385 to ~430-530 MB/s for +8 MiB peak RSS in the herd.
    o.write_buffer_size = 8ull << 20;
    o.max_write_buffer_number = 3;
    return o;
}

// Deletes chunks and records of blobs whose record never reached `complete`. RocksDB replays
// its WAL in order, so a logged chunk that survived a crash implies the earlier incomplete
// record did. Unlogged chunks (large blobs) survive only through a flush, which comes after
// the record's WAL write; only a machine crash losing the unsynced WAL tail could leave such
// chunks without a record: never visible, overwritten when that blob is downloaded again.
result<std::size_t> remove_incomplete(database& d) {
    std::size_t removed = 0;
    std::unique_ptr<rocksdb::Iterator> it(d.db()->NewIterator({}, d.blob_records()));
    std::vector<std::string> doomed;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
        auto rec = decode_blob_record(it->value().ToStringView());
        if (!rec || !rec->complete) doomed.push_back(it->key().ToString());
    }
    if (!it->status().ok()) return database::to_error(it->status(), "scan blob records");
    for (const auto& key : doomed) {
        auto dg = digest::parse(key);
        if (dg) {
            auto begin = chunk_key(*dg, 0);
            auto end = chunk_prefix_end(*dg);
            auto s = d.db()->DeleteRange({}, d.chunks(), begin, end);
            if (!s.ok()) return database::to_error(s, "remove incomplete chunks");
        }
        auto s = d.db()->Delete({}, d.blob_records(), key);
        if (!s.ok()) return database::to_error(s, "remove incomplete record");
        ++removed;
    }
    return removed;
}

// Writes a probe value into the chunk column family, flushes it into a blob file, locates it
// the way blob_store::locate_chunk does, and compares those bytes of that file with the value.
// Locating rests on how RocksDB reads a blob value (checksums off, no blob cache, no
// compression): a RocksDB that reads them differently fails here, and chunks are then served
// from RocksDB's memory instead of with sendfile(2).
bool probe_locate(database& d, std::string& detail) {
    const std::string key = "~regpin-locate-probe";  // sorts after every "sha256:" chunk key
    std::string value(64 * 1024, '\0');
    std::uint32_t x = 2463534242u;
    for (auto& c : value) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        c = static_cast<char>(x);
    }
    auto* db = d.db();
    auto s = db->Put({}, d.chunks(), key, value);
    rocksdb::FlushOptions fo;
    fo.wait = true;
    if (s.ok()) s = db->Flush(fo, d.chunks());
    located_read where;
    rocksdb::PinnableSlice read;
    if (s.ok()) {
        rocksdb::ReadOptions ro;
        ro.verify_checksums = false;
        locate_scope scope(where);
        s = db->Get(ro, d.chunks(), key, &read);
    }
    auto removed = db->Delete({}, d.chunks(), key);
    if (!s.ok() || !removed.ok()) {
        detail = "the probe could not be written or read: " + (s.ok() ? removed : s).ToString();
        return false;
    }
    if (!where.found || where.size != value.size()) {
        detail = "the probe value was not read as one range of a blob file";
        return false;
    }
    std::string got(value.size(), '\0');
    int fd = ::open(where.path.c_str(), O_RDONLY | O_CLOEXEC);
    auto n = fd < 0 ? -1 : ::pread(fd, got.data(), got.size(), static_cast<off_t>(where.offset));
    if (fd >= 0) ::close(fd);
    if (n != static_cast<ssize_t>(value.size()) || got != value) {
        detail = "the bytes located in " + where.path + " are not the probe value";
        return false;
    }
    return true;
}

}  // namespace

database::~database() {
    for (auto* h : cfs_) {
        if (h != nullptr && db_) db_->DestroyColumnFamilyHandle(h);
    }
    if (db_) db_->Close();
}

rocksdb::ReadOptions database::point_read(read_mode mode, const char* what) {
    rocksdb::ReadOptions ro;
    if (mode == read_mode::memory_only)
        ro.read_tier = rocksdb::kBlockCacheTier;
    else
        expect_may_block(what);
    return ro;
}

namespace {
std::atomic<std::int64_t> no_space_at{0};

std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
// Notes a write lost for want of space (last_no_space_ms) and logs it, once a second at most:
// every write fails the same way until space comes back.
errc no_space(const char* what, const std::string& why) {
    auto now = steady_ms(), last = no_space_at.exchange(now);
    if (now - last >= 1000)
        spdlog::error(
            "storage: {}: no space left on the data folder's disk ({}); cached content "
            "is still served, nothing new is stored until space comes back",
            what, why);
    return errc::no_space;
}

}  // namespace

std::int64_t last_no_space_ms() { return no_space_at.load(); }

boost::system::error_code database::check_room(const char* what) const {
    struct statvfs fs {};
    if (::statvfs(dir_.c_str(), &fs) != 0) return {};  // let RocksDB say what is wrong
    auto free = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
    if (free >= write_reserve_bytes) return {};
    return no_space((std::string(what) + " refused").c_str(),
                    std::to_string(free >> 10) + " KiB free, regpin keeps " +
                        std::to_string(write_reserve_bytes >> 20) + " MiB for RocksDB");
}

result<void> checkpoint(database& d, const std::string& dir, std::string& detail) {
    expect_may_block("checkpoint");
    rocksdb::Checkpoint* raw = nullptr;
    auto s = rocksdb::Checkpoint::Create(d.db(), &raw);
    std::unique_ptr<rocksdb::Checkpoint> cp(raw);
    if (s.ok()) s = cp->CreateCheckpoint(dir, 0);  // 0: flush the memtables first
    if (s.ok()) return {};
    detail = s.ToString();
    return database::to_error(s, "back up");
}

result<void> resume(database& d) {
    auto s = d.db()->Resume();
    if (s.ok()) return {};
    return database::to_error(s, "resume writing");
}

boost::system::error_code database::to_error(const rocksdb::Status& s, const char* what) {
    if (s.IsIncomplete()) return errc::would_block;
    if (s.IsNoSpace()) return no_space((std::string(what) + " failed").c_str(), s.ToString());
    spdlog::error("storage: {} failed: {}", what, s.ToString());
    if (s.IsCorruption()) return errc::corruption;
    return errc::io_error;
}

result<std::shared_ptr<database>> open_database(const std::string& dir, open_report& report,
                                                open_mode mode, const open_hooks& hooks) {
    std::error_code fs_ec;
    bool read_only = mode == open_mode::read_only;
    if (read_only && !std::filesystem::exists(std::filesystem::path(dir) / "CURRENT", fs_ec)) {
        report.error_detail = "no regpin database in '" + dir + "'";
        return errc::io_error;
    }
    if (!read_only) std::filesystem::create_directories(dir, fs_ec);
    if (fs_ec) {
        report.error_detail = "cannot create data folder '" + dir + "': " + fs_ec.message();
        return errc::io_error;
    }
    report.path = std::filesystem::absolute(dir, fs_ec).lexically_normal().string();

    std::shared_ptr<database> d(new database());
    d->env_ = make_locating_env(hooks.locate_offset_skew, hooks.file_system);
    rocksdb::DBOptions opts;
    opts.env = d->env_.get();
    opts.create_if_missing = true;
    opts.create_missing_column_families = true;
    // Two flush threads (chunk memtables fill while one is written out), one compaction.
    opts.max_background_flushes = 2;
    opts.max_background_compactions = 1;
    // A write-ahead log file stays until every column family with data in it has flushed, and
    // the small ones (pins, events, last reads) fill their memtables in days: without a cap
    // the logs grew to RocksDB's default of four times all memtables (~600 MiB here), a
    // folder over its size cap (cache.max_bytes) with nothing left to evict. Past this total
    // RocksDB flushes the column families that hold the oldest log.
    opts.max_total_wal_size = 64ull << 20;
    // No preallocation: RocksDB reserves each log in 8.8 MiB steps (1.1 memtables) and blob and
    // table files likewise; the reserved blocks count on disk (du, the size cap) although they
    // hold nothing, and with a few logs alive they were most of a 64 MiB folder. Files here are
    // written once, sequentially: nothing measurable is lost.
    opts.allow_fallocate = false;
    // A crash must not lose acknowledged pins; a torn WAL tail is dropped, never an error.
    opts.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;

    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    // Memtables bound regpin's memory: 8 MiB per column family (RocksDB's default is 64 MiB,
    // two each), 48 MiB over all of them; past that RocksDB flushes the largest.
    opts.db_write_buffer_size = 48ull << 20;
    // Read-only opens cannot create column families: one added by a newer regpin (referrers)
    // is absent from a folder an older one wrote, and its handle stays null.
    std::vector<std::string> existing;
    if (read_only) (void)rocksdb::DB::ListColumnFamilies(opts, dir, &existing);
    std::vector<std::size_t> positions;
    for (std::size_t i = 0; i < std::size(cf_names); ++i) {
        const std::string name = cf_names[i];
        if (read_only && std::find(existing.begin(), existing.end(), name) == existing.end())
            continue;
        rocksdb::ColumnFamilyOptions o;
        o.write_buffer_size = 8ull << 20;
        if (name == "blob_chunks") o = chunk_options();
        descs.emplace_back(name, o);
        positions.push_back(i);
    }
    rocksdb::DB* raw = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    auto s = read_only ? rocksdb::DB::OpenForReadOnly(opts, dir, descs, &handles, &raw)
                       : rocksdb::DB::Open(opts, dir, descs, &handles, &raw);
    d->cfs_.assign(std::size(cf_names), nullptr);
    for (std::size_t i = 0; i < handles.size(); ++i) d->cfs_[positions[i]] = handles[i];
    if (!s.ok()) {
        report.error_detail = s.ToString();
        if (s.IsIOError() && report.error_detail.find("lock") != std::string::npos)
            return errc::locked;
        return s.IsCorruption() ? errc::corruption : errc::io_error;
    }
    d->db_.reset(raw);
    d->dir_ = report.path;
    d->read_only_ = read_only;
    if (read_only) {
        report.locate_detail = "read-only: chunks are read, never located";
        return d;
    }
    auto removed = remove_incomplete(*d);
    if (!removed) {
        report.error_detail = "crash recovery failed";
        return removed.error();
    }
    report.incomplete_blobs_removed = *removed;
    d->locate_verified_ = probe_locate(*d, report.locate_detail);
    report.locate_verified = d->locate_verified_;
    return d;
}

}  // namespace regpin::storage
