#pragma once
// regpin pins migrate: an embedded (RocksDB) store's pins, history and pending alerts copied
// into etcd, for replicas that will share them (issue 13).

#include <string>
#include <vector>

namespace regpin::proxy::cli {

struct migrate_report {
    std::size_t tags = 0;                // tags written to etcd
    std::size_t pins = 0;                // pins written
    std::size_t events = 0;              // history events written
    std::size_t alerts = 0;              // pending webhook deliveries written
    std::size_t already = 0;             // tags etcd already held the same way (an earlier run)
    std::vector<std::string> conflicts;  // tags etcd holds differently: left alone
};

int migrate_command(int argc, char** argv);

}  // namespace regpin::proxy::cli
