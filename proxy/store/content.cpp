#include "proxy/store/content.hpp"

#include "proxy/store/pool.hpp"
#include "storage/database.hpp"

namespace regpin::proxy::store {

namespace {

using storage::blob_store;

// Named functions for on_pool: calls that take more than one storage call or object.
result<shared_chunks::chunk_ptr> read_shared(const blob_store* blobs, shared_chunks* copies,
                                             storage::digest d, std::uint64_t index) {
    return copies->get(*blobs, d, index);
}

result<content::located_chunks> locate_run(const blob_store* blobs, shared_chunks* copies,
                                           storage::digest d, std::uint64_t first,
                                           std::uint64_t count) {
    content::located_chunks run;
    if ((run.bytes = copies->find(d, first))) return run;
    storage::chunk read;
    for (std::uint64_t i = 0; i < count; ++i) {
        auto span = blobs->locate_chunk(d, first + i, read);
        if (!span) return span.error();
        if (!*span) {
            run.bytes = copies->adopt(d, first + i, std::move(read));
            break;
        }
        run.spans.push_back(std::move(**span));
    }
    return run;
}

result<std::optional<std::string>> small_blob(const blob_store* blobs, storage::digest d,
                                              std::uint64_t limit) {
    auto rec = blobs->find(d);
    if (!rec) return rec.error();
    if (!*rec || (*rec)->size > limit) return std::optional<std::string>{};
    std::string out;
    out.reserve((*rec)->size);
    auto r = blobs->read_blob(d, **rec, [&](std::string_view bytes) { out.append(bytes); });
    if (!r) return r.error();
    return std::optional<std::string>{std::move(out)};
}

content::backup_result backup_to(storage::database* db, std::string dir) {
    content::backup_result out;
    std::string detail;
    if (auto r = storage::checkpoint(*db, dir, detail); !r) {
        out.error = detail.empty() ? r.error().message() : detail;
        return out;
    }
    if (auto usage = storage::measure_disk_usage(dir)) out.bytes = usage->folder_bytes;
    return out;
}

}  // namespace

content::content(std::shared_ptr<storage::database> db, boost::asio::thread_pool& pool)
    : pool_(pool),
      db_(db),
      blobs_(db),
      manifests_(db),
      referrers_(db),
      index_(std::make_unique<storage::cache_index>(db)) {}

awaitable<content::backup_result> content::backup(std::string dir) {
    auto* db = db_.get();
    co_return co_await on_pool<&backup_to>(pool_, db, dir);
}

result<std::optional<storage::manifest>> content::peek_manifest(const storage::digest& d) const {
    return manifests_.find(d, storage::read_mode::memory_only);
}

result<std::optional<storage::blob_record>> content::peek_blob(const storage::digest& d) const {
    auto r = blobs_.find(d, storage::read_mode::memory_only);
    if (r && *r) index_->touch(d);
    return r;
}

awaitable<result<std::optional<storage::manifest>>> content::find_manifest(
    storage::digest d) const {
    const auto* manifests = &manifests_;
    co_return co_await memory_first<&storage::manifest_store::find>(pool_, manifests, d);
}

awaitable<result<void>> content::put_manifest(storage::digest d, storage::manifest m) {
    auto* manifests = &manifests_;
    co_return co_await on_pool<&storage::manifest_store::put>(pool_, manifests, d, m);
}

awaitable<result<std::optional<storage::blob_record>>> content::find_blob(storage::digest d) const {
    const auto* blobs = &blobs_;
    auto r = co_await memory_first<&blob_store::find>(pool_, blobs, d);
    if (r && *r) index_->touch(d);
    co_return r;
}

awaitable<result<void>> content::begin_blob(storage::digest d, std::uint32_t chunk_size) {
    auto* blobs = &blobs_;
    co_return co_await on_pool<&blob_store::begin>(pool_, blobs, d, chunk_size);
}

awaitable<result<void>> content::put_chunk(storage::digest d, std::uint64_t index,
                                           std::string_view bytes, blob_store::durability mode) {
    auto* blobs = &blobs_;
    co_return co_await on_pool<&blob_store::put_chunk>(pool_, blobs, d, index, bytes, mode);
}

awaitable<result<void>> content::commit_blob(storage::digest d, std::uint64_t size,
                                             blob_store::durability mode) {
    auto* blobs = &blobs_;
    auto r = co_await on_pool<&blob_store::commit>(pool_, blobs, d, size, mode);
    if (r) index_->added(d, size);
    co_return r;
}

awaitable<result<void>> content::discard_blob(storage::digest d) {
    auto* blobs = &blobs_;
    co_return co_await on_pool<&blob_store::discard>(pool_, blobs, d);
}

awaitable<result<content::located_chunks>> content::locate_chunks(storage::digest d,
                                                                  std::uint64_t first,
                                                                  std::uint64_t count) const {
    const auto* blobs = &blobs_;
    auto* copies = &copies_;
    co_return co_await on_pool<&locate_run>(pool_, blobs, copies, d, first, count);
}

awaitable<result<shared_chunks::chunk_ptr>> content::read_chunk(storage::digest d,
                                                                std::uint64_t index) const {
    const auto* blobs = &blobs_;
    auto* copies = &copies_;
    co_return co_await on_pool<&read_shared>(pool_, blobs, copies, d, index);
}

awaitable<result<std::optional<std::string>>> content::read_small_blob(storage::digest d,
                                                                       std::uint64_t limit) const {
    const auto* blobs = &blobs_;
    co_return co_await on_pool<&small_blob>(pool_, blobs, d, limit);
}

awaitable<result<std::optional<storage::referrers_record>>> content::find_referrers(
    std::string registry, std::string repository, storage::digest subject) const {
    const auto* referrers = &referrers_;
    co_return co_await on_pool<&storage::referrers_store::find>(pool_, referrers, registry,
                                                                repository, subject);
}

awaitable<result<void>> content::put_referrers(std::string registry, std::string repository,
                                               storage::digest subject,
                                               storage::referrers_record r) {
    auto* referrers = &referrers_;
    co_return co_await on_pool<&storage::referrers_store::put>(pool_, referrers, registry,
                                                               repository, subject, r);
}

}  // namespace regpin::proxy::store
