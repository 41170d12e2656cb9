#pragma once
// Minimal tar for bundles: writing ustar (GNU base-256 sizes past 8 GiB; names past 100
// characters in the ustar prefix, else a pax "path" record, as for blobs/sha512/<128 hex>),
// reading ustar, pax (path, size) and GNU long names, as skopeo and GNU tar write them.
// Own code rather than libarchive because import reads entries by offset (index.json and
// regpin-pins.json first, then each blob when a manifest needs it), which libarchive's
// forward-only tar reader cannot do without a second pass or a temporary copy.
// Not a general archiver: regular files only; other entries are skipped when reading.
// Reading is hardened for crafted input: every size is checked against the file before use
// (no offset wraps, the header walk always advances), numbers past 63 bits are refused.

#include <cstdint>
#include <fstream>
#include <functional>
#include <istream>
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
    void header(const std::string& name, std::uint64_t size, char type);
    std::ofstream out_;
    std::string path_;
};

struct tar_entry {
    std::uint64_t offset = 0;  // of the content in the file
    std::uint64_t size = 0;
};

// The regular files of a tar, by normalised name ("./blobs/x" -> "blobs/x"). Throws
// std::runtime_error for a file that is not a tar or is truncated.
std::map<std::string, tar_entry> index_tar(std::istream& in);

// Reads `entry` (at most `limit` bytes, else throws).
std::string read_entry(std::istream& in, const tar_entry& entry, std::uint64_t limit);

}  // namespace regpin::proxy::bundle
