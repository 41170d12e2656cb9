#pragma once

#include <memory>
#include <mutex>

#include "storage/pin_store.hpp"

namespace regpin::storage {

class database;

// Pins in the `pins` column family, one JSON value per key, written with sync = true.
class rocksdb_pin_store final : public pin_store {
public:
    explicit rocksdb_pin_store(std::shared_ptr<database> db);

    result<std::optional<pin>> find(const pin_key& key) const override;
    result<pin> create_if_absent(const pin& candidate) override;
    result<std::vector<pin>> list_repository(const std::string& registry,
                                             const std::string& repository) const override;

    static std::string encode_key(const pin_key& key);

private:
    std::shared_ptr<database> db_;
    std::mutex write_mutex_;  // makes find-then-put atomic among writers
};

}  // namespace regpin::storage
