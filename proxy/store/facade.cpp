#include "proxy/store/facade.hpp"

#include <stdexcept>

namespace regpin::proxy::store {

facade::facade(std::shared_ptr<storage::database> db, std::unique_ptr<storage::pin_store> pins,
               config::audit_settings audit, std::unique_ptr<storage::audit_store> audit_records,
               std::size_t threads)
    : pool_(threads),
      db_(std::move(db)),
      pin_store_(std::move(pins)),
      content_(db_, pool_),
      pins_(*pin_store_, pool_) {
    if (!audit_records) {
        auto records = storage::open_audit_store(db_);
        if (!records)
            throw std::runtime_error("cannot read the pull audit: " + records.error().message());
        audit_records = std::move(*records);
    }
    audit_ = std::make_unique<store::pull_audit>(std::move(audit_records), pool_, audit);
}

facade::~facade() {
    audit_->stop();
    pool_.join();
}

}  // namespace regpin::proxy::store
