#pragma once
// One tag, one truth across clients: a tag has one pin per accept class (upstreams answer a tag
// per Accept, protocol.md section 2), but a client is served a pin of another class whenever it
// accepts that pin's manifest, so clients with different Accept lists get the same bytes. The
// rule, as pure functions (README, "One tag, one truth"). No I/O; thread-safe.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "proxy/oci/manifest.hpp"
#include "storage/pin.hpp"

namespace regpin::proxy::pins {

struct class_answer {
    // The pin of another class that answers the client, if any.
    std::optional<storage::pin> serve;
    // `serve` is one platform's manifest, and the client also accepts indexes: the upstream's
    // answer is preferred when it is an index of the same image (a multi-platform client must
    // not be held to one platform), else `serve` answers.
    bool prefer_upstream_index = false;
    // The tag's first pin (earliest first sight), for the same-image check of a new
    // representation. nullopt when the tag has no pin.
    std::optional<storage::pin> first;
};

// Which of `tag_pins` (every class of one tag, none of them of `cls`) answers a client of
// accept class `cls`: among the pins whose media type the class admits, an index before a
// single manifest, then the earliest first sight.
class_answer answer_for_class(const std::vector<storage::pin>& tag_pins, std::uint8_t cls);

// What answers a client of accept class `cls` from `tag_pins` (every class of one tag): its
// class's own pin; else another class's that it accepts (answer_for_class), unless an index of
// the same image is to be preferred, which only a first sight can decide.
struct class_pick {
    std::optional<storage::pin> answer;  // nullopt: a first sight decides
    std::optional<class_answer> others;  // set when the tag has no pin of `cls`
};
class_pick pick_for_class(const std::vector<storage::pin>& tag_pins, std::uint8_t cls);

// What a stored manifest is, for same_image: its digest and what it refers to.
struct manifest_identity {
    std::string_view digest;
    std::optional<oci::manifest_refs> refs;  // nullopt: not read (or unreadable)
};

// Whether two representations of a tag belong to the same image: the same digest, one an index
// that lists the other, or two indexes that share a child manifest.
bool same_image(const manifest_identity& a, const manifest_identity& b);

}  // namespace regpin::proxy::pins
