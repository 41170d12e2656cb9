#include "proxy/http/destinations.hpp"

#include <gtest/gtest.h>

namespace {

namespace ip = boost::asio::ip;
using regpin::proxy::http::address_class;
using regpin::proxy::http::classify;
using regpin::proxy::http::destination_policy;
using regpin::proxy::http::destination_refusal;
using regpin::proxy::http::network_contains;

ip::address addr(const char* s) { return ip::make_address(s); }
ip::tcp::endpoint ep(const char* s, unsigned short port = 80) { return {addr(s), port}; }
constexpr auto public_only = static_cast<std::uint8_t>(address_class::public_address);
constexpr auto loopback = static_cast<std::uint8_t>(address_class::loopback);

TEST(Destinations, AddressesAreClassifiedAsTheRfcsSay) {
    EXPECT_EQ(classify(addr("8.8.8.8")), address_class::public_address);
    EXPECT_EQ(classify(addr("127.0.0.2")), address_class::loopback);
    EXPECT_EQ(classify(addr("::1")), address_class::loopback);
    EXPECT_EQ(classify(addr("169.254.169.254")), address_class::link_local);
    EXPECT_EQ(classify(addr("fe80::1")), address_class::link_local);
    for (const char* a :
         {"10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1", "fd00::1"})
        EXPECT_EQ(classify(addr(a)), address_class::private_network) << a;
    EXPECT_EQ(classify(addr("172.32.0.1")), address_class::public_address);
    for (const char* a : {"0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"})
        EXPECT_EQ(classify(addr(a)), address_class::reserved) << a;
    // An IPv4-mapped address is its IPv4 address.
    EXPECT_EQ(classify(addr("::ffff:169.254.169.254")), address_class::link_local);
}

TEST(Destinations, NetworksContainTheirAddressesOnly) {
    EXPECT_TRUE(network_contains("10.1.0.0/16", addr("10.1.255.3")));
    EXPECT_FALSE(network_contains("10.1.0.0/16", addr("10.2.0.1")));
    EXPECT_TRUE(network_contains("169.254.169.254", addr("169.254.169.254")));
    EXPECT_TRUE(network_contains("fd00::/8", addr("fd12::1")));
    EXPECT_FALSE(network_contains("fd00::/8", addr("fe80::1")));
    EXPECT_FALSE(network_contains("10.0.0.0/33", addr("10.0.0.1")));
    EXPECT_FALSE(network_contains("blobs.example", addr("10.0.0.1")));
    EXPECT_FALSE(network_contains("10.0.0.0/8", addr("::1")));
}

TEST(Destinations, InternalAddressesNeedTheUpstreamOnTheirClassOrTheAllowList) {
    destination_policy p;
    EXPECT_EQ(destination_refusal(p, "cdn.example", ep("93.184.216.34"), public_only), "");
    EXPECT_NE(destination_refusal(p, "evil.example", ep("169.254.169.254"), public_only), "");
    EXPECT_NE(destination_refusal(p, "evil.example", ep("10.0.0.5"), public_only), "");
    EXPECT_NE(destination_refusal(p, "evil.example", ep("127.0.0.1"), public_only), "");
    // An upstream on loopback may send regpin to loopback, not to link-local.
    EXPECT_EQ(destination_refusal(p, "127.0.0.2", ep("127.0.0.2"), loopback), "");
    EXPECT_NE(destination_refusal(p, "evil.example", ep("169.254.169.254"), loopback), "");
    // Reserved addresses never.
    EXPECT_NE(destination_refusal(p, "x", ep("0.0.0.0"), 0xFF), "");
    p.allow = {"10.20.0.0/16", "blobs.internal"};
    EXPECT_EQ(destination_refusal(p, "s3", ep("10.20.1.1"), public_only), "");
    EXPECT_EQ(destination_refusal(p, "blobs.internal", ep("10.99.0.1"), public_only), "");
    EXPECT_NE(destination_refusal(p, "other.internal", ep("10.99.0.1"), public_only), "");
}

TEST(Destinations, RegpinsOwnListenersAreNeverADestination) {
    destination_policy p;
    p.own_listeners = {ep("127.0.0.1", 5001), ep("0.0.0.0", 5000)};
    EXPECT_NE(destination_refusal(p, "127.0.0.1", ep("127.0.0.1", 5001), 0xFF), "");
    EXPECT_EQ(destination_refusal(p, "127.0.0.1", ep("127.0.0.1", 5002), 0xFF), "");
    // Listening on every address: any internal address of the node on that port.
    EXPECT_NE(destination_refusal(p, "node", ep("10.0.0.7", 5000), 0xFF), "");
    p.allow = {"127.0.0.0/8"};
    EXPECT_NE(destination_refusal(p, "127.0.0.1", ep("127.0.0.1", 5001), 0xFF), "");
}

}  // namespace
