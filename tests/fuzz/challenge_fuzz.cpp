// WWW-Authenticate values as a hostile upstream may send them.
#include <cstdint>
#include <string_view>

#include "proxy/upstream/challenge.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    auto c = regpin::proxy::upstream::parse_challenge(input);
    if (c && c->scheme.empty()) __builtin_trap();
    return 0;
}
