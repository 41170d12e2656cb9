// The bundle reader: any input, as a tar, is indexed or refused with std::runtime_error, never a
// crash or a loop (every entry lies within the input); a regpin-pins.json found in it is read or
// refused the same way. The input is also read as regpin-pins.json on its own.
#include <cstdint>
#include <sstream>
#include <string>

#include "proxy/bundle/pins_file.hpp"
#include "proxy/bundle/tar.hpp"

using namespace regpin::proxy::bundle;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string input(reinterpret_cast<const char*>(data), size);
    try {
        std::istringstream in(input);
        auto entries = index_tar(in);
        for (const auto& [name, entry] : entries) {
            if (entry.offset > size || entry.size > size - entry.offset) __builtin_trap();
            auto bytes = read_entry(in, entry, 1 << 20);
            if (bytes.size() != entry.size) __builtin_trap();
            if (name == "regpin-pins.json") (void)read_pins_file(bytes);
        }
    } catch (const std::runtime_error&) {
    }
    try {
        (void)read_pins_file(input);
    } catch (const std::runtime_error&) {
    }
    return 0;
}
