#pragma once
// Wall-clock time as regpin stores it: unix milliseconds (first seen, last verified, event
// times, blob creation, delivery schedules).

#include <chrono>
#include <cstdint>

namespace regpin::storage {

inline std::int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace regpin::storage
