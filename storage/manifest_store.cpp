#include "storage/manifest_store.hpp"

#include "storage/database_impl.hpp"
#include "storage/record_codec.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

manifest_store::manifest_store(std::shared_ptr<database> db) : db_(std::move(db)) {}

result<std::optional<manifest>> manifest_store::find(const digest& d, read_mode mode) const {
    auto ro = database::point_read(mode, "manifest_store::find");
    std::string value;
    auto s = db_->db()->Get(ro, db_->manifests(), d.str(), &value);
    if (s.IsNotFound()) return std::optional<manifest>{};
    if (!s.ok()) return database::to_error(s, "read manifest");
    auto m = decode_manifest(value);
    if (!m) return errc::corruption;
    return std::optional<manifest>{std::move(*m)};
}

result<void> manifest_store::put(const digest& d, const manifest& m) {
    expect_may_block("manifest_store::put");
    if (auto ec = db_->check_room("write manifest")) return ec;
    if (!matches(d, m.bytes)) return errc::digest_mismatch;
    if (m.media_type.size() > 0xffff) return errc::invalid_argument;
    auto s = db_->db()->Put({}, db_->manifests(), d.str(), encode_manifest(m));
    if (!s.ok()) return database::to_error(s, "write manifest");
    return {};
}

}  // namespace regpin::storage
