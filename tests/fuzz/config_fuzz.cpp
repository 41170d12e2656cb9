// Config files: any input gives settings or a config_error naming a key, never a crash.
#include <cstdint>
#include <string>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string input(reinterpret_cast<const char*>(data), size);
    try {
        auto s = regpin::config::load_json(input);
        if (s.upstreams.empty()) __builtin_trap();
    } catch (const regpin::config::config_error& e) {
        if (e.key().empty()) __builtin_trap();
    }
    return 0;
}
