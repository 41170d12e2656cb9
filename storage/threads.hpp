#pragma once
// Which threads may block on storage. The threads running the network event loop mark
// themselves (mark_network_thread); every storage entry point that may block (a synced write,
// a read that may reach the disk) calls expect_may_block. In builds with assertions (without
// NDEBUG: Debug builds and the sanitizer build the tests run) a call on a marked thread logs
// its name and aborts: a RocksDB write stall would stop every connection of that thread.
// Release builds compile the check out.

namespace regpin::storage {

void mark_network_thread() noexcept;
bool on_network_thread() noexcept;

#ifdef NDEBUG
inline void expect_may_block(const char*) noexcept {}
#else
void expect_may_block(const char* what) noexcept;
#endif

}  // namespace regpin::storage
