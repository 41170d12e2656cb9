#include "proxy/oci/range.hpp"

#include <charconv>

namespace regpin::proxy::oci {

namespace {

std::optional<std::uint64_t> number(std::string_view s) {
    if (s.empty() || s.size() > 19) return std::nullopt;
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
    return v;
}

}  // namespace

range_result parse_range(std::string_view h, std::uint64_t size) {
    range_result full;
    constexpr std::string_view unit = "bytes=";
    if (h.substr(0, unit.size()) != unit) return full;
    h.remove_prefix(unit.size());
    if (h.find(',') != std::string_view::npos) return full;
    auto dash = h.find('-');
    if (dash == std::string_view::npos) return full;
    auto a = h.substr(0, dash);
    auto b = h.substr(dash + 1);
    range_result r;
    r.outcome = range_outcome::partial;
    if (a.empty()) {  // suffix: the last N bytes
        auto n = number(b);
        if (!n) return full;
        if (*n == 0 || size == 0) return {range_outcome::unsatisfiable, {}};
        r.range.first = *n >= size ? 0 : size - *n;
        r.range.last = size - 1;
        return r;
    }
    auto first = number(a);
    if (!first) return full;
    std::uint64_t last = size == 0 ? 0 : size - 1;
    if (!b.empty()) {
        auto l = number(b);
        if (!l || *l < *first) return full;
        last = std::min(*l, last);
    }
    if (*first >= size) return {range_outcome::unsatisfiable, {}};
    r.range = {*first, last};
    return r;
}

}  // namespace regpin::proxy::oci
