#pragma once
// The re-point summary: what changed between the pinned image and the one the upstream now
// serves, so that a reader can tell a rebuild of the same source (same platforms, most layers
// shared, same revision label, newer `created`) from a rewrite. Pure: the caller fetches the
// documents (what_to_fetch says which), this reads them. Thread-safe; never throws on bad input.

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace regpin::proxy::pins {

// One side of a re-point (pinned or upstream), as far as the caller could fetch it.
struct image_docs {
    // Content type of manifest_bytes (parameters allowed); empty: the document's `mediaType`.
    std::string media_type;
    std::string manifest_bytes;  // the tag's manifest or index, exact bytes
    // Documents summarize may read, by digest ("sha256:..."); any may be missing.
    std::map<std::string, std::string> manifests_by_digest;  // an index's child manifests
    std::map<std::string, std::string> configs_by_digest;    // config blobs
};

struct needed {
    std::vector<std::string> manifests;  // child manifests to put in manifests_by_digest
    std::vector<std::string> configs;    // config blobs to put in configs_by_digest
    bool empty() const { return manifests.empty() && configs.empty(); }
};

struct fetch_plan {
    needed pinned;
    needed upstream;
    bool empty() const { return pinned.empty() && upstream.empty(); }
};

// The digests summarize would read that are not yet in each side's maps: the representative
// platform's child manifest of an index, and the config blob of the manifest compared. Reading
// a child reveals its config, so call again after adding what was fetched; stop when the plan
// is empty or a round added nothing (a failed fetch just leaves fields null). Well-formed
// images need at most three rounds (an index on one side, a single manifest on the other).
fetch_plan what_to_fetch(const image_docs& pinned, const image_docs& upstream);

// The summary object (null wherever a value is unknown or unreadable):
//   media_type: {pinned, upstream, changed}
//   platforms:  {added: [...], removed: [...], changed: [...], unchanged_count}  sorted;
//               "os/arch[/variant]" from index entries (attestation entries skipped), or from
//               the config of a single manifest facing an index; null when neither side is an
//               index
//   layers:     {platform, shared, total_pinned, total_upstream}  the representative platform
//               of indexes (linux/amd64 if both have it, else the first common one in the pinned
//               index's order; null for two single manifests); shared = upstream layers whose
//               digest is also a pinned layer
//   config:     {digest, created, revision, version}, each {pinned, upstream}; created from the
//               config blob, revision and version from its config.Labels
//               org.opencontainers.image.{revision,version}. Read from the representative
//               platform's config (an index side without one uses linux/amd64, else its first).
//   errors:     ["pinned manifest: not JSON", ...] documents that could not be read
//   text:       one line, e.g. "index: 1 platform added (linux/arm64), 1 changed; linux/amd64
//               shares 3 of 4 layers; revision abc123 -> def456; created 2026-01-01T00:00:00Z
//               -> 2026-02-01T00:00:00Z"
nlohmann::json summarize(const image_docs& pinned, const image_docs& upstream);

}  // namespace regpin::proxy::pins
