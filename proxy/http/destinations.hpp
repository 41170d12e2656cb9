#pragma once
// Where regpin may connect on an upstream's say-so: a redirect's Location, a token realm. The
// configured URL is trusted; a destination it names is not (server-side request forgery: a
// compromised upstream aiming regpin at a cloud metadata address, a service on the node's
// private network, or regpin's own admin listener).
//
// A destination is refused when it resolves only to addresses that are:
// - regpin's own listeners (always);
// - reserved (unspecified, multicast, broadcast: always);
// - loopback, link-local or private (RFC 1918, 100.64/10, fc00::/7), unless the trusted origin
//   itself connected to an address of that class (an upstream on a private network may send
//   its clients to a private blob store), or the destination is on the allow list.
// Pure functions; thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace regpin::proxy::http {

enum class address_class : std::uint8_t {
    public_address = 1,
    loopback = 2,
    link_local = 4,
    private_network = 8,
    reserved = 16,
};

address_class classify(const boost::asio::ip::address& a);
const char* to_string(address_class c);

struct destination_policy {
    // Hosts (exact names) and networks ("10.1.0.0/16", "fd00::/8", or one address) an upstream
    // may send regpin to whatever their class. Entries that parse as neither are host names.
    std::vector<std::string> allow;
    // regpin's own listeners (registry and admin API): never a destination.
    std::vector<boost::asio::ip::tcp::endpoint> own_listeners;
};

// Why `ep`, an address of `host`, may not be connected to for an origin whose own connections
// went to addresses of classes `trusted` (a mask of address_class); empty when it may.
std::string destination_refusal(const destination_policy& policy, const std::string& host,
                                const boost::asio::ip::tcp::endpoint& ep, std::uint8_t trusted);

// Whether `entry` ("10.0.0.0/8", "10.1.2.3", "::1/128") contains `a`; false when it is no
// network.
bool network_contains(const std::string& entry, const boost::asio::ip::address& a);

}  // namespace regpin::proxy::http
