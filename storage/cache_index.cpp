#include "storage/cache_index.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>

#include <rocksdb/db.h>
#include <rocksdb/metadata.h>
#include <rocksdb/write_batch.h>

#include "storage/blob_store.hpp"
#include "storage/clock.hpp"
#include "storage/database_impl.hpp"
#include "storage/record_codec.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

result<disk_usage> measure_disk_usage(const std::string& dir) {
    expect_may_block("measure_disk_usage");
    disk_usage u;
    std::error_code ec;
    // RocksDB keeps its files in the folder itself; a subfolder (a checkpoint, an archive) is
    // counted too: it is on the same disk.
    for (auto it = std::filesystem::recursive_directory_iterator(
             dir, std::filesystem::directory_options::skip_permission_denied, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        struct stat st {};
        // A file RocksDB deletes between the listing and the stat is simply not counted.
        if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode))
            u.folder_bytes += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
    if (ec) return errc::io_error;
    struct statvfs fs {};
    if (::statvfs(dir.c_str(), &fs) != 0) return errc::io_error;
    u.fs_bytes = static_cast<std::uint64_t>(fs.f_blocks) * fs.f_frsize;
    u.fs_free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
    return u;
}

cache_index::cache_index(std::shared_ptr<database> db) : db_(std::move(db)) {}

result<void> cache_index::load() {
    expect_may_block("cache_index::load");
    std::unordered_map<digest, entry> found;
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, db_->blob_records()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
        auto d = digest::parse(it->key().ToStringView());
        auto rec = decode_blob_record(it->value().ToStringView());
        if (!d || !rec || !rec->complete) continue;
        found[*d] = entry{rec->size, rec->created_ms, false, true};
    }
    if (!it->status().ok()) return database::to_error(it->status(), "scan blob records");
    std::vector<std::string> stale;  // last access of a blob evicted after it was written
    if (auto* access = db_->blob_access()) {
        it.reset(db_->db()->NewIterator({}, access));
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
            auto d = digest::parse(it->key().ToStringView());
            auto e = d ? found.find(*d) : found.end();
            if (e == found.end() || it->value().size() != 8) {
                stale.push_back(it->key().ToString());
                continue;
            }
            e->second.last_access_ms = static_cast<std::int64_t>(
                std::max<std::uint64_t>(from_big_endian(it->value().ToStringView()),
                                        static_cast<std::uint64_t>(e->second.last_access_ms)));
        }
        if (!it->status().ok()) return database::to_error(it->status(), "scan blob access");
        for (const auto& key : stale) (void)db_->db()->Delete({}, access, key);
    }
    std::lock_guard lock(mutex_);
    // Reads and commits recorded while loading are newer than what was stored.
    for (auto& [d, e] : entries_) {
        auto f = found.find(d);
        if (e.known) {
            found[d] = e;
        } else if (f != found.end()) {
            f->second.last_access_ms = std::max(f->second.last_access_ms, e.last_access_ms);
            f->second.dirty = true;
            f->second.readers = e.readers;
        }
    }
    entries_ = std::move(found);
    bytes_ = 0;
    for (const auto& [d, e] : entries_) bytes_ += e.size;
    known_ = entries_.size();
    loaded_ = true;
    return {};
}

bool cache_index::loaded() const {
    std::lock_guard lock(mutex_);
    return loaded_;
}

void cache_index::touch(const digest& d) {
    auto now = now_ms();
    std::lock_guard lock(mutex_);
    auto it = entries_.find(d);
    if (it == entries_.end()) {
        // After load, an unknown blob was evicted since the reader found it.
        if (loaded_) return;
        it = entries_.emplace(d, entry{}).first;
    }
    it->second.last_access_ms = now;
    it->second.dirty = true;
}

std::shared_ptr<void> cache_index::hold(const digest& d) {
    auto now = now_ms();
    {
        std::lock_guard lock(mutex_);
        auto it = entries_.find(d);
        if (it == entries_.end()) it = entries_.emplace(d, entry{}).first;
        if (it->second.evicting) return nullptr;
        it->second.last_access_ms = now;
        it->second.dirty = true;
        ++it->second.readers;
    }
    // The handle owns nothing; its deleter lets go of the blob. A non-null pointer is all a
    // shared_ptr<void> needs to say "held".
    return std::shared_ptr<void>(this, [this, d](void*) { release(d); });
}

void cache_index::release(const digest& d) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(d);
    if (it == entries_.end() || it->second.readers == 0) return;
    // An entry only a reader made (the blob was not indexed) goes with its last reader.
    if (--it->second.readers == 0 && !it->second.known) entries_.erase(it);
}

void cache_index::added(const digest& d, std::uint64_t size) {
    auto now = now_ms();
    std::uint64_t total = 0;
    std::function<void(std::uint64_t)> growth;
    {
        std::lock_guard lock(mutex_);
        auto& e = entries_[d];
        if (e.known)
            bytes_ -= e.size;
        else
            ++known_;
        e = entry{size, now, true, true, e.readers};
        bytes_ += size;
        total = bytes_;
        growth = growth_;
    }
    if (growth) growth(total);
}

void cache_index::on_growth(std::function<void(std::uint64_t)> listener) {
    std::lock_guard lock(mutex_);
    growth_ = std::move(listener);
}

std::uint64_t cache_index::manifest_count() const {
    std::uint64_t n = 0;
    if (!db_->db()->GetIntProperty(db_->manifests(), "rocksdb.estimate-num-keys", &n)) return 0;
    return n;
}

result<std::size_t> cache_index::flush() {
    expect_may_block("cache_index::flush");
    if (auto ec = db_->check_room("write blob access times")) return ec;
    auto* access = db_->blob_access();
    if (access == nullptr) return std::size_t{0};
    rocksdb::WriteBatch batch;
    std::size_t n = 0;
    {
        std::lock_guard lock(mutex_);
        if (!loaded_) return std::size_t{0};  // load() merges them first
        for (auto& [d, e] : entries_) {
            if (!e.dirty || !e.known) continue;
            e.dirty = false;
            (void)batch.Put(access, d.str(),
                            big_endian(static_cast<std::uint64_t>(e.last_access_ms)));
            ++n;
        }
    }
    if (n == 0) return n;
    auto s = db_->db()->Write({}, &batch);
    if (!s.ok()) return database::to_error(s, "write blob access times");
    return n;
}

std::vector<cached_blob> cache_index::by_last_access() const {
    std::vector<cached_blob> out;
    {
        std::lock_guard lock(mutex_);
        out.reserve(entries_.size());
        for (const auto& [d, e] : entries_)
            if (e.known) out.push_back({d, e.size, e.last_access_ms});
    }
    std::sort(out.begin(), out.end(), [](const cached_blob& a, const cached_blob& b) {
        return a.last_access_ms != b.last_access_ms ? a.last_access_ms < b.last_access_ms
                                                    : a.d.str() < b.d.str();
    });
    return out;
}

std::size_t cache_index::count() const {
    std::lock_guard lock(mutex_);
    return known_;
}

std::uint64_t cache_index::bytes() const {
    std::lock_guard lock(mutex_);
    return bytes_;
}

std::uint64_t cache_index::size_of(const digest& d) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(d);
    return it != entries_.end() && it->second.known ? it->second.size : 0;
}

result<std::uint64_t> cache_index::evict(const digest& d) {
    expect_may_block("cache_index::evict");
    std::uint64_t size = 0;
    {
        std::lock_guard lock(mutex_);
        auto it = entries_.find(d);
        if (it == entries_.end() || !it->second.known || it->second.readers > 0 ||
            it->second.evicting)
            return std::uint64_t{0};
        size = it->second.size;
        it->second.evicting = true;  // no hold() from now on
    }
    // One batch: a download of `d` that starts once the record is gone writes its chunks after
    // this range deletion, never before it.
    rocksdb::WriteBatch batch;
    (void)batch.Delete(db_->blob_records(), d.str());
    (void)batch.DeleteRange(db_->chunks(), chunk_key(d, 0), chunk_prefix_end(d));
    if (auto* access = db_->blob_access()) (void)batch.Delete(access, d.str());
    auto s = db_->db()->Write({}, &batch);
    if (s.ok()) db_->locations().forget(d);
    std::lock_guard lock(mutex_);
    auto it = entries_.find(d);
    if (!s.ok()) {
        if (it != entries_.end()) it->second.evicting = false;
        return database::to_error(s, "evict blob");
    }
    if (it != entries_.end()) {
        bytes_ -= it->second.size;
        --known_;
        entries_.erase(it);
    }
    return size;
}

result<void> cache_index::reclaim() {
    expect_may_block("cache_index::reclaim");
    rocksdb::CompactRangeOptions co;
    co.exclusive_manual_compaction = false;  // downloads' flushes and compactions go on
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
    auto s = db_->db()->CompactRange(co, db_->chunks(), nullptr, nullptr);
    if (!s.ok()) return database::to_error(s, "compact blob chunks");
    return {};
}

blob_file_stats cache_index::blob_files() const {
    rocksdb::ColumnFamilyMetaData meta;
    db_->db()->GetColumnFamilyMetaData(db_->chunks(), &meta);
    blob_file_stats st;
    st.files = meta.blob_files.size();
    for (const auto& b : meta.blob_files) {
        st.bytes += b.blob_file_size;
        st.garbage_bytes += b.garbage_blob_bytes;
    }
    return st;
}

}  // namespace regpin::storage
