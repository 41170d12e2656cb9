#pragma once
// Minimal tar for bundles: writing ustar (GNU base-256 sizes past 8 GiB), reading ustar, pax
// (path, size) and GNU long names, as skopeo and GNU tar write them. Not a general archiver:
// regular files and directories only; links and devices are skipped when reading.

#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace regpin::proxy::bundle {

class tar_writer {
public:
    // Opens `path` for writing (truncates). Throws std::runtime_error naming the path.
    explicit tar_writer(const std::string& path);

    // Adds a file of `size` bytes whose content `fill` writes by calling `write` repeatedly.
    // Throws std::runtime_error if fill writes more or less than `size`.
    void add(const std::string& name, std::uint64_t size,
             const std::function<void(const std::function<void(std::string_view)>& write)>& fill);
    void add(const std::string& name, std::string_view content);
    // Writes the end-of-archive marker and closes. Throws on an I/O error.
    void finish();

private:
    void header(const std::string& name, std::uint64_t size);
    std::ofstream out_;
    std::string path_;
};

struct tar_entry {
    std::uint64_t offset = 0;  // of the content in the file
    std::uint64_t size = 0;
};

// The regular files of a tar, by normalised name ("./blobs/x" -> "blobs/x"). Throws
// std::runtime_error for a file that is not a tar or is truncated.
std::map<std::string, tar_entry> index_tar(std::ifstream& in);

// Reads `entry` (at most `limit` bytes, else throws).
std::string read_entry(std::ifstream& in, const tar_entry& entry, std::uint64_t limit);

}  // namespace regpin::proxy::bundle
