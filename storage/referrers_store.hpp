#pragma once
// The referrers of a subject (GET /v2/<name>/referrers/<digest>, the OCI 1.1 image index of
// the manifests whose `subject` is that digest), as the upstream last answered them, unfiltered:
// served when the upstream is down, and carried in bundles. Not content-addressed (the list
// grows as things are signed), so kept per (registry, repository, subject) with the time it was
// fetched. Thread-safe; every call may block (storage/threads.hpp).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "storage/digest.hpp"
#include "storage/errors.hpp"

namespace regpin::storage {

class database;

struct referrers_record {
    std::string index;  // the image index bytes
    std::int64_t fetched_ms = 0;
};

class referrers_store {
public:
    explicit referrers_store(std::shared_ptr<database> db);

    [[nodiscard]] result<std::optional<referrers_record>> find(const std::string& registry,
                                                               const std::string& repository,
                                                               const digest& subject) const;
    [[nodiscard]] result<void> put(const std::string& registry, const std::string& repository,
                                   const digest& subject, const referrers_record& r);

private:
    std::shared_ptr<database> db_;
};

}  // namespace regpin::storage
