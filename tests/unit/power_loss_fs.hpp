#pragma once
// A file system that can lose power, for durability tests. Every file written through it
// remembers how many of its bytes were synced (Sync, Fsync). After power_off() nothing written
// reaches the disk any more (the process may go on "running" and closing files); then
// drop_unsynced() truncates every file to its synced length, as a machine crash leaves it: the
// page cache, which survives a killed process, is gone.
//
// RocksDB has its own (FaultInjectionTestFS), but Debian's librocksdb-dev ships no header for
// it; this is the part the tests need, on RocksDB's public FileSystem API.

#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <rocksdb/file_system.h>

namespace regpin::testing {

class power_loss_fs final : public rocksdb::FileSystemWrapper {
public:
    explicit power_loss_fs(
        std::shared_ptr<rocksdb::FileSystem> base = rocksdb::FileSystem::Default())
        : FileSystemWrapper(std::move(base)) {}

    const char* Name() const override { return "regpin-power-loss"; }

    // From now on writes and syncs are accepted and dropped.
    void power_off() { on_ = false; }
    bool powered() const { return on_; }

    // Truncates every file written through this file system to what was synced of it.
    void drop_unsynced() {
        std::lock_guard lock(mutex_);
        for (const auto& [path, f] : files_) (void)::truncate(path.c_str(), f.synced);
    }

    rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
        auto s = target()->NewWritableFile(fname, opts, result, dbg);
        if (s.ok()) track(fname, 0, result);
        return s;
    }

    rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                         std::unique_ptr<rocksdb::FSWritableFile>* result,
                                         rocksdb::IODebugContext* dbg) override {
        std::uint64_t size = 0;
        (void)target()->GetFileSize(fname, opts.io_options, &size, dbg);
        auto s = target()->ReopenWritableFile(fname, opts, result, dbg);
        if (s.ok()) track(fname, size, result);  // what is there already counts as synced
        return s;
    }

    rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                        const rocksdb::FileOptions& opts,
                                        std::unique_ptr<rocksdb::FSWritableFile>* result,
                                        rocksdb::IODebugContext* dbg) override {
        auto s = target()->ReuseWritableFile(fname, old_fname, opts, result, dbg);
        if (s.ok()) track(fname, 0, result);
        return s;
    }

    rocksdb::IOStatus RenameFile(const std::string& src, const std::string& target_name,
                                 const rocksdb::IOOptions& opts,
                                 rocksdb::IODebugContext* dbg) override {
        if (!on_) return rocksdb::IOStatus::OK();
        auto s = target()->RenameFile(src, target_name, opts, dbg);
        if (s.ok()) {
            std::lock_guard lock(mutex_);
            if (auto it = files_.find(src); it != files_.end()) {
                files_[target_name] = it->second;
                files_.erase(src);
            }
        }
        return s;
    }

    rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& opts,
                                 rocksdb::IODebugContext* dbg) override {
        if (!on_) return rocksdb::IOStatus::OK();
        auto s = target()->DeleteFile(fname, opts, dbg);
        std::lock_guard lock(mutex_);
        files_.erase(fname);
        return s;
    }

private:
    struct file_state {
        std::uint64_t size = 0;
        std::uint64_t synced = 0;
    };

    class tracked_file final : public rocksdb::FSWritableFileOwnerWrapper {
    public:
        tracked_file(std::unique_ptr<rocksdb::FSWritableFile> f, power_loss_fs& fs,
                     std::string path)
            : FSWritableFileOwnerWrapper(std::move(f)), fs_(fs), path_(std::move(path)) {}

        rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                                 rocksdb::IODebugContext* dbg) override {
            if (!fs_.on_) return rocksdb::IOStatus::OK();
            auto s = target()->Append(data, options, dbg);
            if (s.ok()) fs_.grew(path_, data.size());
            return s;
        }
        rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                                 const rocksdb::DataVerificationInfo& info,
                                 rocksdb::IODebugContext* dbg) override {
            if (!fs_.on_) return rocksdb::IOStatus::OK();
            auto s = target()->Append(data, options, info, dbg);
            if (s.ok()) fs_.grew(path_, data.size());
            return s;
        }
        rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                           const rocksdb::IOOptions& options,
                                           rocksdb::IODebugContext* dbg) override {
            if (!fs_.on_) return rocksdb::IOStatus::OK();
            auto s = target()->PositionedAppend(data, offset, options, dbg);
            if (s.ok()) fs_.grew(path_, data.size());
            return s;
        }
        rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
            if (!fs_.on_) return rocksdb::IOStatus::OK();
            auto s = target()->Sync(options, dbg);
            if (s.ok()) fs_.synced(path_);
            return s;
        }
        rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override {
            if (!fs_.on_) return rocksdb::IOStatus::OK();
            auto s = target()->Fsync(options, dbg);
            if (s.ok()) fs_.synced(path_);
            return s;
        }
        rocksdb::IOStatus Flush(const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override {
            if (!fs_.on_) return rocksdb::IOStatus::OK();
            return target()->Flush(options, dbg);
        }

    private:
        power_loss_fs& fs_;
        std::string path_;
    };

    void track(const std::string& path, std::uint64_t size,
               std::unique_ptr<rocksdb::FSWritableFile>* file) {
        {
            std::lock_guard lock(mutex_);
            files_[path] = {size, size};
        }
        *file = std::make_unique<tracked_file>(std::move(*file), *this, path);
    }
    void grew(const std::string& path, std::uint64_t n) {
        std::lock_guard lock(mutex_);
        files_[path].size += n;
    }
    void synced(const std::string& path) {
        std::lock_guard lock(mutex_);
        auto& f = files_[path];
        f.synced = f.size;
    }

    std::mutex mutex_;
    std::map<std::string, file_state> files_;
    std::atomic<bool> on_{true};
};

}  // namespace regpin::testing
