#include "storage/verify.hpp"

#include <rocksdb/db.h>
#include <spdlog/spdlog.h>

#include "storage/blob_store.hpp"
#include "storage/database_impl.hpp"
#include "storage/manifest_store.hpp"
#include "storage/record_codec.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

namespace {

// What a walk checks: the complete blobs and the manifests, listed first (keys and sizes only),
// so the walk holds no iterator (no snapshot pinning old files) while it reads for minutes.
struct listing {
    std::vector<std::pair<digest, blob_record>> blobs;
    std::vector<std::string> manifests;
};

result<listing> list_content(database& db) {
    listing out;
    std::unique_ptr<rocksdb::Iterator> it(db.db()->NewIterator({}, db.blob_records()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
        auto d = digest::parse(it->key().ToStringView());
        auto rec = decode_blob_record(it->value().ToStringView());
        if (d && rec && rec->complete) out.blobs.emplace_back(*d, *rec);
    }
    if (!it->status().ok()) return database::to_error(it->status(), "list blobs to verify");
    it.reset(db.db()->NewIterator({}, db.manifests()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) out.manifests.push_back(it->key().ToString());
    if (!it->status().ok()) return database::to_error(it->status(), "list manifests to verify");
    return out;
}

enum class outcome { good, bad, gone, stopped };

// Reads the blob as it is served (checksums off) and hashes it.
outcome check_blob(const std::shared_ptr<database>& db, const digest& d, const blob_record& rec,
                   const verify_options& options, std::uint64_t& bytes) {
    blob_store blobs(db);
    hasher h(d.algorithm());
    chunk c;
    std::uint64_t total = 0;
    for (std::uint64_t i = 0; i * rec.chunk_size < rec.size; ++i) {
        auto r = blobs.read_chunk(d, i, c);
        if (!r) {
            // Evicted meanwhile (its record is gone), or a chunk missing: bad.
            auto still = blobs.find(d);
            if (still && !*still) return outcome::gone;
            return outcome::bad;
        }
        auto b = c.bytes();
        h.update(std::span<const char>(b.data(), b.size()));
        total += b.size();
        bytes += b.size();
        if (options.pace && !options.pace(b.size())) return outcome::stopped;
    }
    if (total != rec.size) return outcome::bad;
    return h.finish() == d ? outcome::good : outcome::bad;
}

}  // namespace

result<verify_report> verify_content(const std::shared_ptr<database>& db, cache_index* index,
                                     const verify_options& options) {
    expect_may_block("verify_content");
    auto listed = list_content(*db);
    if (!listed) return listed.error();
    verify_report report;
    for (const auto& [d, rec] : listed->blobs) {
        auto got = check_blob(db, d, rec, options, report.blob_bytes);
        if (got == outcome::stopped) return report;
        if (got == outcome::gone) {
            ++report.skipped;
            continue;
        }
        ++report.blobs;
        if (got == outcome::good) continue;
        spdlog::error(
            "verify: blob {} does not match its digest: {}", d.str(),
            options.quarantine ? "quarantined (fetched again when asked for)" : "reported only");
        if (options.quarantine) {
            if (index) {
                auto removed = index->evict(d);
                if (!removed) return removed.error();
                if (*removed == 0) {  // a reader holds it: the next walk takes it
                    ++report.skipped;
                    continue;
                }
            } else if (auto r = blob_store(db).discard(d); !r) {  // offline: nobody reads
                return r.error();
            }
        }
        report.bad_blobs.push_back(d.str());
    }
    for (const auto& key : listed->manifests) {
        std::string value;
        auto s = db->db()->Get({}, db->manifests(), key, &value);
        if (s.IsNotFound()) continue;
        bool good = false;
        if (s.ok()) {
            auto d = digest::parse(key);
            auto m = decode_manifest(value);
            good = d && m && manifest_matches(*d, *m);
        } else if (!s.IsCorruption()) {
            return database::to_error(s, "read manifest to verify");
        }
        ++report.manifests;
        if (options.pace && !options.pace(value.size())) return report;
        if (good) continue;
        spdlog::error(
            "verify: manifest {} does not match its digest: {}", key,
            options.quarantine ? "quarantined (fetched again when asked for)" : "reported only");
        if (options.quarantine) {
            auto d = db->db()->Delete({}, db->manifests(), key);
            if (!d.ok()) return database::to_error(d, "quarantine manifest");
        }
        report.bad_manifests.push_back(key);
    }
    return report;
}

}  // namespace regpin::storage
