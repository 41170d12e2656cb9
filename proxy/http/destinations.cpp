#include "proxy/http/destinations.hpp"

#include <charconv>

#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>

namespace regpin::proxy::http {

namespace ip = boost::asio::ip;

namespace {

bool in_v4(const ip::address_v4& a, std::uint32_t net, int bits) {
    auto mask = bits == 0 ? 0u : ~0u << (32 - bits);
    return (a.to_uint() & mask) == (net & mask);
}

address_class classify_v4(const ip::address_v4& a) {
    if (in_v4(a, 0x00000000, 8) || in_v4(a, 0xE0000000, 4) || in_v4(a, 0xF0000000, 4))
        return address_class::reserved;  // "this network", multicast, 240/4 and broadcast
    if (in_v4(a, 0x7F000000, 8)) return address_class::loopback;
    if (in_v4(a, 0xA9FE0000, 16)) return address_class::link_local;  // 169.254/16: metadata
    if (in_v4(a, 0x0A000000, 8) || in_v4(a, 0xAC100000, 12) || in_v4(a, 0xC0A80000, 16) ||
        in_v4(a, 0x64400000, 10))
        return address_class::private_network;
    return address_class::public_address;
}

}  // namespace

address_class classify(const ip::address& a) {
    if (a.is_v4()) return classify_v4(a.to_v4());
    auto v6 = a.to_v6();
    if (v6.is_v4_mapped()) return classify_v4(ip::make_address_v4(ip::v4_mapped, v6));
    if (v6.is_unspecified() || v6.is_multicast()) return address_class::reserved;
    if (v6.is_loopback()) return address_class::loopback;
    if (v6.is_link_local()) return address_class::link_local;
    auto b = v6.to_bytes();
    if ((b[0] & 0xFE) == 0xFC) return address_class::private_network;  // fc00::/7
    return address_class::public_address;
}

const char* to_string(address_class c) {
    switch (c) {
        case address_class::public_address:
            return "public";
        case address_class::loopback:
            return "loopback";
        case address_class::link_local:
            return "link-local";
        case address_class::private_network:
            return "private";
        case address_class::reserved:
            return "reserved";
    }
    return "?";
}

bool network_contains(const std::string& entry, const ip::address& a) {
    boost::system::error_code ec;
    auto slash = entry.find('/');
    auto base = ip::make_address(entry.substr(0, slash), ec);
    if (ec) return false;
    int bits = base.is_v4() ? 32 : 128;
    if (slash != std::string::npos) {
        auto text = std::string_view(entry).substr(slash + 1);
        auto [p, perr] = std::from_chars(text.data(), text.data() + text.size(), bits);
        if (perr != std::errc{} || p != text.data() + text.size()) return false;
    }
    if (base.is_v4() && a.is_v4()) {
        if (bits < 0 || bits > 32) return false;
        return in_v4(a.to_v4(), base.to_v4().to_uint(), bits);
    }
    if (base.is_v6() && a.is_v6()) {
        if (bits < 0 || bits > 128) return false;
        auto x = base.to_v6().to_bytes(), y = a.to_v6().to_bytes();
        for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
            unsigned mask = bits >= 8 ? 0xFF : (0xFF << (8 - bits)) & 0xFF;
            if ((x[i] & mask) != (y[i] & mask)) return false;
        }
        return true;
    }
    return false;
}

std::string destination_refusal(const destination_policy& policy, const std::string& host,
                                const ip::tcp::endpoint& ep, std::uint8_t trusted) {
    auto a = ep.address();
    if (a.is_v6() && a.to_v6().is_v4_mapped()) a = ip::make_address_v4(ip::v4_mapped, a.to_v6());
    for (const auto& own : policy.own_listeners) {
        if (own.port() != ep.port()) continue;
        auto listening = own.address();
        if (listening == a ||
            (listening.is_unspecified() && classify(a) != address_class::public_address))
            return "regpin's own listener " + a.to_string() + ":" + std::to_string(ep.port());
    }
    for (const auto& entry : policy.allow)
        if (entry == host || network_contains(entry, a)) return {};
    auto c = classify(a);
    if (c == address_class::public_address) return {};
    if (c != address_class::reserved && (trusted & static_cast<std::uint8_t>(c))) return {};
    return std::string("a ") + to_string(c) + " address (" + a.to_string() +
           ") the upstream itself is not on; add it to the upstream's allow_destinations to "
           "allow it";
}

}  // namespace regpin::proxy::http
