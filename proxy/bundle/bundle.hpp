#pragma once
// Bundles for air-gapped sites: an OCI image layout in a tar (blobs/sha256/<hex>, index.json,
// oci-layout), so standard tools read it (`skopeo copy oci-archive:BUNDLE.tar:<reference>`),
// plus regpin-pins.json with every pin's provenance (registry, repository, tag, digest, first
// seen, state, pending digest, decisions, history: pins_file.hpp). Both commands work on the data
// folder directly: export opens it read-only (fine while regpin runs), import needs it to itself
// (regpin stopped).

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace regpin::proxy::bundle {

struct export_request {
    std::string data_dir;
    std::vector<std::string> images;  // references (oci::parse_image_reference); or all
    bool all = false;
    std::string output;  // BUNDLE.tar
};

struct export_report {
    std::size_t pins = 0;
    std::size_t manifests = 0;
    std::size_t blobs = 0;
    std::uint64_t bytes = 0;
    std::vector<std::string> warnings;  // e.g. platforms of an index that were never cached
};

// Throws std::runtime_error with a message for the operator (a pin that does not exist, a
// blob that was never cached, an unwritable output).
export_report export_bundle(const export_request& r);

struct import_request {
    std::string data_dir;
    std::string bundle;  // BUNDLE.tar, or a plain OCI layout tar (oci-archive)
    // For a layout without provenance: pin its (only, or tag-matching) image as this reference.
    std::string as;
    // Policies (for conflicts with existing pins) and webhooks (alerts for them).
    config::settings settings;
};

struct import_report {
    std::size_t manifests_added = 0;
    std::size_t blobs_added = 0;
    std::size_t blobs_present = 0;
    std::size_t pins_created = 0;
    std::size_t pins_unchanged = 0;
    std::vector<std::string>
        conflicts;  // "docker.io/library/x:1 pinned sha256:a, bundle sha256:b: policy pin, kept"
    std::vector<std::string> warnings;
};

// Verifies every digest before anything becomes visible (blobs are committed only after their
// sha256 matched; pins are written only after all content verified). Idempotent. An existing
// different pin is never overwritten silently: the conflict is reported and the configured
// policy applied, as for an upstream re-point. Throws std::runtime_error (nothing pinned) when
// any content fails verification or the data folder is in use.
import_report import_bundle(const import_request& r);

}  // namespace regpin::proxy::bundle
