#include "proxy/bundle/tar.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <tuple>

namespace regpin::proxy::bundle {

namespace {

constexpr std::size_t block = 512;

void put_octal(char* field, std::size_t width, std::uint64_t value) {
    // width includes the terminating NUL
    std::memset(field, '0', width - 1);
    field[width - 1] = '\0';
    for (std::size_t i = width - 1; i-- > 0 && value > 0; value >>= 3)
        field[i] = static_cast<char>('0' + (value & 7));
}

// A numeric header field: octal, or GNU base-256 (first byte 0x80). Refuses values that do not
// fit 63 bits, so offsets computed from them never wrap.
std::uint64_t get_number(const char* field, std::size_t width) {
    constexpr std::uint64_t limit = std::uint64_t{1} << 63;
    if (static_cast<unsigned char>(field[0]) & 0x80) {  // GNU base-256
        if (static_cast<unsigned char>(field[0]) != 0x80)
            throw std::runtime_error("not a tar file (negative or huge base-256 number)");
        std::uint64_t v = 0;
        for (std::size_t i = 1; i < width; ++i) {
            if (v >= (limit >> 8)) throw std::runtime_error("not a tar file (number too large)");
            v = (v << 8) | static_cast<unsigned char>(field[i]);
        }
        return v;
    }
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < width && field[i] != '\0' && field[i] != ' '; ++i) {
        if (field[i] < '0' || field[i] > '7')
            throw std::runtime_error("not a tar file (bad number field)");
        v = (v << 3) | static_cast<std::uint64_t>(field[i] - '0');  // 12 digits: < 2^36
    }
    return v;
}

std::string field_string(const char* field, std::size_t width) {
    return std::string(field, strnlen(field, width));
}

std::string normalise(std::string name) {
    while (name.rfind("./", 0) == 0) name.erase(0, 2);
    while (!name.empty() && name.front() == '/') name.erase(0, 1);
    return name;
}

// pax records: "<len> key=value\n"... Refuses a malformed record (a length that does not fit,
// a size that is not a number) rather than guessing.
void parse_pax(std::string_view data, std::string& path, std::optional<std::uint64_t>& size) {
    while (!data.empty()) {
        auto space = data.find(' ');
        if (space == std::string_view::npos || space == 0 || space > 20)
            throw std::runtime_error("not a tar file (malformed pax record)");
        std::uint64_t len = 0;
        for (char c : data.substr(0, space)) {
            if (c < '0' || c > '9')
                throw std::runtime_error("not a tar file (malformed pax record)");
            len = len * 10 + static_cast<std::uint64_t>(c - '0');
        }
        if (len < space + 2 || len > data.size() || data[len - 1] != '\n')
            throw std::runtime_error("not a tar file (malformed pax record)");
        auto record = data.substr(space + 1, len - space - 2);  // without the trailing \n
        auto eq = record.find('=');
        if (eq != std::string_view::npos) {
            auto key = record.substr(0, eq);
            auto value = record.substr(eq + 1);
            if (key == "path") path = std::string(value);
            if (key == "size") {
                std::uint64_t v = 0;
                auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
                if (ec != std::errc{} || end != value.data() + value.size() || v >= (1ull << 63))
                    throw std::runtime_error("not a tar file (bad pax size)");
                size = v;
            }
        }
        data.remove_prefix(len);
    }
}

// "<len> key=value\n", where len counts the whole record including its own digits.
std::string pax_record(std::string_view key, std::string_view value) {
    auto body = " " + std::string(key) + "=" + std::string(value) + "\n";
    auto len = body.size() + 1;
    while (std::to_string(len).size() + body.size() != len) ++len;
    return std::to_string(len) + body;
}

// Splits `name` into a ustar prefix (up to 155) and name (up to 100) at a '/'; nullopt when it
// cannot be split so.
std::optional<std::pair<std::string, std::string>> ustar_split(const std::string& name) {
    for (auto slash = name.find('/'); slash != std::string::npos;
         slash = name.find('/', slash + 1)) {
        if (slash <= 155 && name.size() - slash - 1 <= 100 && slash + 1 < name.size())
            return std::pair{name.substr(0, slash), name.substr(slash + 1)};
    }
    return std::nullopt;
}

}  // namespace

tar_writer::tar_writer(const std::string& path)
    : out_(path, std::ios::binary | std::ios::trunc), path_(path) {
    if (!out_) throw std::runtime_error("cannot create '" + path + "'");
}

void tar_writer::header(const std::string& name, std::uint64_t size, char type) {
    std::string short_name = name, prefix;
    if (name.size() > 100) {
        if (auto split = ustar_split(name)) {
            std::tie(prefix, short_name) = *split;
        } else {
            // A pax extended header carries the whole path (POSIX.1-2001; GNU tar, bsdtar,
            // skopeo and Go's archive/tar read it); the ustar name is a truncated stand-in.
            auto record = pax_record("path", name);
            header("PaxHeaders/" + name.substr(name.size() - 80), record.size(), 'x');
            out_.write(record.data(), static_cast<std::streamsize>(record.size()));
            static const char zeros[block] = {};
            if (auto pad = record.size() % block)
                out_.write(zeros, static_cast<std::streamsize>(block - pad));
            short_name = name.substr(name.size() - 100);
        }
    }
    std::array<char, block> h{};
    std::memcpy(h.data(), short_name.data(), short_name.size());
    put_octal(h.data() + 100, 8, 0644);
    put_octal(h.data() + 108, 8, 0);
    put_octal(h.data() + 116, 8, 0);
    if (size < (1ull << 33)) {
        put_octal(h.data() + 124, 12, size);
    } else {  // GNU base-256 for sizes past 8 GiB
        h[124] = static_cast<char>(0x80);
        for (int i = 11; i >= 1; --i, size >>= 8) h[124 + i] = static_cast<char>(size & 0xff);
    }
    put_octal(h.data() + 136, 12, 0);
    h[156] = type;
    std::memcpy(h.data() + 257, "ustar", 6);
    h[263] = '0';
    h[264] = '0';
    std::memcpy(h.data() + 345, prefix.data(), prefix.size());
    std::memset(h.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (char c : h) sum += static_cast<unsigned char>(c);
    put_octal(h.data() + 148, 7, sum);
    h[155] = ' ';
    out_.write(h.data(), block);
}

void tar_writer::add(
    const std::string& name, std::uint64_t size,
    const std::function<void(const std::function<void(std::string_view)>&)>& fill) {
    header(name, size, '0');
    std::uint64_t written = 0;
    fill([&](std::string_view bytes) {
        out_.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        written += bytes.size();
    });
    if (written != size)
        throw std::runtime_error("tar entry " + name + ": wrote " + std::to_string(written) +
                                 " bytes, announced " + std::to_string(size));
    static const char zeros[block] = {};
    if (auto pad = size % block) out_.write(zeros, static_cast<std::streamsize>(block - pad));
    if (!out_) throw std::runtime_error("write to '" + path_ + "' failed");
}

void tar_writer::add(const std::string& name, std::string_view content) {
    add(name, content.size(),
        [&](const std::function<void(std::string_view)>& write) { write(content); });
}

void tar_writer::finish() {
    static const char zeros[2 * block] = {};
    out_.write(zeros, sizeof zeros);
    out_.close();
    if (!out_) throw std::runtime_error("write to '" + path_ + "' failed");
}

std::map<std::string, tar_entry> index_tar(std::istream& in) {
    std::map<std::string, tar_entry> entries;
    in.seekg(0, std::ios::end);
    auto file_size = static_cast<std::uint64_t>(in.tellg());
    std::uint64_t pos = 0;
    std::string long_name;
    std::string pax_path;
    std::optional<std::uint64_t> pax_size;
    std::array<char, block> h{};
    while (pos + block <= file_size) {
        in.seekg(static_cast<std::streamoff>(pos));
        if (!in.read(h.data(), block)) throw std::runtime_error("truncated tar header");
        bool zero = std::all_of(h.begin(), h.end(), [](char c) { return c == 0; });
        if (zero) break;
        unsigned sum = 0;
        for (std::size_t i = 0; i < block; ++i)
            sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
        if (get_number(h.data() + 148, 8) != sum)
            throw std::runtime_error("not a tar file (bad header checksum)");
        std::uint64_t size = get_number(h.data() + 124, 12);
        char type = h[156];
        std::string name = field_string(h.data(), 100);
        if (std::memcmp(h.data() + 257, "ustar", 5) == 0) {
            auto prefix = field_string(h.data() + 345, 155);
            if (!prefix.empty()) name = prefix + "/" + name;
        }
        std::uint64_t content = pos + block;
        // Every entry, of any type, must lie within the file: so `pos` only grows, and the loop
        // ends after at most file_size / 512 headers, whatever the input.
        if (size > file_size - content) throw std::runtime_error("truncated tar entry " + name);
        if (type == 'x' || type == 'L') {
            if (size > 1024 * 1024) throw std::runtime_error("tar extended header too large");
            std::string data(size, '\0');
            in.seekg(static_cast<std::streamoff>(content));
            if (!in.read(data.data(), static_cast<std::streamsize>(size)))
                throw std::runtime_error("truncated tar");
            if (type == 'x')
                parse_pax(data, pax_path, pax_size);
            else
                long_name = std::string(data.c_str());
        } else if (type == '0' || type == '\0' || type == '7') {
            if (!long_name.empty()) name = long_name;
            if (!pax_path.empty()) name = pax_path;
            if (pax_size) size = *pax_size;
            if (size > file_size - content) throw std::runtime_error("truncated tar entry " + name);
            entries[normalise(name)] = {content, size};
            long_name.clear();
            pax_path.clear();
            pax_size.reset();
        } else {
            long_name.clear();
            pax_path.clear();
            pax_size.reset();
        }
        pos = content + (size + block - 1) / block * block;
    }
    return entries;
}

std::string read_entry(std::istream& in, const tar_entry& entry, std::uint64_t limit) {
    if (entry.size > limit)
        throw std::runtime_error("tar entry larger than " + std::to_string(limit) + " bytes");
    std::string data(entry.size, '\0');
    in.clear();
    in.seekg(static_cast<std::streamoff>(entry.offset));
    if (!in.read(data.data(), static_cast<std::streamsize>(entry.size)))
        throw std::runtime_error("truncated tar");
    return data;
}

}  // namespace regpin::proxy::bundle
