#include "storage/blob_files.hpp"

namespace regpin::storage {

namespace {

thread_local located_read* active = nullptr;

// Header (30 bytes) and footer (32 bytes) reads stay real; chunk values are at least
// min_blob_size (4 KiB) or they would be inline in the LSM, not in a blob file.
constexpr std::size_t smallest_located = 4096;

class locating_file final : public rocksdb::FSRandomAccessFileOwnerWrapper {
public:
    locating_file(std::unique_ptr<rocksdb::FSRandomAccessFile> f, std::string path,
                  std::uint64_t skew)
        : FSRandomAccessFileOwnerWrapper(std::move(f)), path_(std::move(path)), skew_(skew) {}

    rocksdb::IOStatus Read(std::uint64_t offset, std::size_t n, const rocksdb::IOOptions& options,
                           rocksdb::Slice* result, char* scratch,
                           rocksdb::IODebugContext* dbg) const override {
        if (active != nullptr && n >= smallest_located && scratch != nullptr) {
            active->found = true;
            active->path = path_;
            active->offset = offset + skew_;
            active->size = n;
            *result = rocksdb::Slice(scratch, n);
            return rocksdb::IOStatus::OK();
        }
        return target()->Read(offset, n, options, result, scratch, dbg);
    }

private:
    std::string path_;
    std::uint64_t skew_;
};

class locating_fs final : public rocksdb::FileSystemWrapper {
public:
    locating_fs(std::shared_ptr<rocksdb::FileSystem> base, std::uint64_t skew)
        : FileSystemWrapper(std::move(base)), skew_(skew) {}

    const char* Name() const override { return "regpin-locating"; }

    rocksdb::IOStatus NewRandomAccessFile(const std::string& path,
                                          const rocksdb::FileOptions& options,
                                          std::unique_ptr<rocksdb::FSRandomAccessFile>* result,
                                          rocksdb::IODebugContext* dbg) override {
        auto s = target()->NewRandomAccessFile(path, options, result, dbg);
        if (s.ok() && path.ends_with(".blob") && !options.use_direct_reads &&
            !options.use_mmap_reads)
            *result = std::make_unique<locating_file>(std::move(*result), path, skew_);
        return s;
    }

private:
    std::uint64_t skew_;
};

}  // namespace

locate_scope::locate_scope(located_read& out) : previous_(active) {
    out = located_read{};
    active = &out;
}

locate_scope::~locate_scope() { active = previous_; }

std::unique_ptr<rocksdb::Env> make_locating_env(std::uint64_t offset_skew,
                                                std::shared_ptr<rocksdb::FileSystem> base) {
    if (!base) base = rocksdb::FileSystem::Default();
    return rocksdb::NewCompositeEnv(std::make_shared<locating_fs>(std::move(base), offset_skew));
}

}  // namespace regpin::storage
