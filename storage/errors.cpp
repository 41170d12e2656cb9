#include "storage/errors.hpp"

#include <string>

namespace regpin::storage {

namespace {

class category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "regpin.storage"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::ok:
                return "ok";
            case errc::io_error:
                return "storage I/O error";
            case errc::corruption:
                return "stored data is corrupt";
            case errc::locked:
                return "data folder is in use by another process";
            case errc::digest_mismatch:
                return "bytes do not match their digest";
            case errc::size_mismatch:
                return "size does not match";
            case errc::invalid_argument:
                return "invalid argument";
            case errc::conflict:
                return "the record changed meanwhile";
            case errc::would_block:
                return "not in memory";
            case errc::unavailable:
                return "the pin store (etcd) cannot be reached";
            case errc::no_space:
                return "the data folder's disk is full";
        }
        return "unknown storage error";
    }
};

}  // namespace

const boost::system::error_category& storage_category() noexcept {
    static const category c;
    return c;
}

}  // namespace regpin::storage
