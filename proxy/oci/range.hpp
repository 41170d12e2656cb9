#pragma once
// Single-range `Range: bytes=...` requests (RFC 9110 section 14).

#include <cstdint>
#include <optional>
#include <string_view>

namespace regpin::proxy::oci {

struct byte_range {
    std::uint64_t first = 0;
    std::uint64_t last = 0;  // inclusive
    std::uint64_t length() const { return last - first + 1; }
};

enum class range_outcome { full, partial, unsatisfiable };

struct range_result {
    range_outcome outcome = range_outcome::full;
    byte_range range;
};

// Interprets `header` for a body of `size` bytes. Absent, malformed or multi-range headers
// give `full` (a server may ignore Range); a start past the end gives `unsatisfiable`.
range_result parse_range(std::string_view header, std::uint64_t size);

}  // namespace regpin::proxy::oci
