#include "storage/threads.hpp"

#include <cstdio>
#include <cstdlib>

namespace regpin::storage {

namespace {
thread_local bool network_thread = false;
}

void mark_network_thread() noexcept { network_thread = true; }
bool on_network_thread() noexcept { return network_thread; }

#ifndef NDEBUG
void expect_may_block(const char* what) noexcept {
    if (!network_thread) return;
    std::fprintf(stderr,
                 "regpin: storage call '%s' on a network thread; it may block every connection "
                 "of that thread (use proxy/store)\n",
                 what);
    std::abort();
}
#endif

}  // namespace regpin::storage
