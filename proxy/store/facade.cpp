#include "proxy/store/facade.hpp"

namespace regpin::proxy::store {

facade::facade(std::shared_ptr<storage::database> db, std::unique_ptr<storage::pin_store> pins,
               std::size_t threads)
    : pool_(threads),
      db_(std::move(db)),
      pin_store_(std::move(pins)),
      content_(db_, pool_),
      pins_(*pin_store_, pool_) {}

facade::~facade() { pool_.join(); }

}  // namespace regpin::proxy::store
