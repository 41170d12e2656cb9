#include "storage/referrers_store.hpp"

#include "storage/database_impl.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

namespace {

std::string key_of(const std::string& registry, const std::string& repository,
                   const digest& subject) {
    std::string k = registry;
    k.push_back('\0');
    k += repository;
    k.push_back('\0');
    k += subject.str();
    return k;
}

}  // namespace

referrers_store::referrers_store(std::shared_ptr<database> db) : db_(std::move(db)) {}

result<std::optional<referrers_record>> referrers_store::find(const std::string& registry,
                                                              const std::string& repository,
                                                              const digest& subject) const {
    if (!db_->referrers()) return std::optional<referrers_record>{};
    auto ro = database::point_read(read_mode::may_block, "referrers_store::find");
    std::string value;
    auto s = db_->db()->Get(ro, db_->referrers(), key_of(registry, repository, subject), &value);
    if (s.IsNotFound()) return std::optional<referrers_record>{};
    if (!s.ok()) return database::to_error(s, "read referrers");
    if (value.size() < 8) return errc::corruption;
    referrers_record r;
    std::uint64_t t = 0;
    for (int i = 0; i < 8; ++i) t = (t << 8) | static_cast<unsigned char>(value[i]);
    r.fetched_ms = static_cast<std::int64_t>(t);
    r.index = value.substr(8);
    return std::optional<referrers_record>{std::move(r)};
}

result<void> referrers_store::put(const std::string& registry, const std::string& repository,
                                  const digest& subject, const referrers_record& r) {
    expect_may_block("referrers_store::put");
    if (auto ec = db_->check_room("write referrers")) return ec;
    if (!db_->referrers()) return errc::invalid_argument;
    std::string value(8, '\0');
    auto t = static_cast<std::uint64_t>(r.fetched_ms);
    for (int i = 7; i >= 0; --i, t >>= 8) value[i] = static_cast<char>(t & 0xff);
    value += r.index;
    auto s = db_->db()->Put({}, db_->referrers(), key_of(registry, repository, subject), value);
    if (!s.ok()) return database::to_error(s, "write referrers");
    return {};
}

}  // namespace regpin::storage
