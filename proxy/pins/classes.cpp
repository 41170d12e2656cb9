#include "proxy/pins/classes.hpp"

#include <algorithm>

#include "proxy/oci/media_types.hpp"

namespace regpin::proxy::pins {

namespace {

bool accepts_an_index(std::uint8_t cls) {
    return cls == 0 || (cls & (oci::accepts_docker_manifest_list | oci::accepts_oci_index)) != 0;
}

bool earlier(const storage::pin& a, const storage::pin& b) {
    return a.first_seen_ms < b.first_seen_ms;
}

bool lists(const manifest_identity& index, std::string_view digest) {
    if (!index.refs || !index.refs->is_index) return false;
    return std::any_of(index.refs->children.begin(), index.refs->children.end(),
                       [&](const oci::descriptor& d) { return d.digest == digest; });
}

}  // namespace

class_pick pick_for_class(const std::vector<storage::pin>& tag_pins, std::uint8_t cls) {
    class_pick out;
    for (const auto& p : tag_pins)
        if (p.key.accept_class == cls) {
            out.answer = p;
            return out;
        }
    out.others = answer_for_class(tag_pins, cls);
    if (out.others->serve && !out.others->prefer_upstream_index) out.answer = out.others->serve;
    return out;
}

class_answer answer_for_class(const std::vector<storage::pin>& tag_pins, std::uint8_t cls) {
    class_answer out;
    const storage::pin* best = nullptr;
    for (const auto& p : tag_pins) {
        if (!out.first || earlier(p, *out.first)) out.first = p;
        if (!oci::accept_class_admits(cls, p.media_type)) continue;
        if (!best) {
            best = &p;
            continue;
        }
        bool index = oci::is_index_type(p.media_type);
        bool best_index = oci::is_index_type(best->media_type);
        if (index != best_index ? index : earlier(p, *best)) best = &p;
    }
    if (best) {
        out.serve = *best;
        // The empty class (*/*, or no Accept) takes any manifest as it is.
        out.prefer_upstream_index =
            cls != 0 && accepts_an_index(cls) && !oci::is_index_type(best->media_type);
    }
    return out;
}

bool same_image(const manifest_identity& a, const manifest_identity& b) {
    if (a.digest == b.digest) return true;
    if (lists(a, b.digest) || lists(b, a.digest)) return true;
    if (!a.refs || !b.refs || !a.refs->is_index || !b.refs->is_index) return false;
    for (const auto& child : a.refs->children)
        if (lists(b, child.digest)) return true;
    return false;
}

}  // namespace regpin::proxy::pins
