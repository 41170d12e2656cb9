#pragma once
// Container images in Kubernetes YAML, found by a real YAML parser (libyaml, Debian's
// libyaml-dev: the parser PyYAML and others build on) and rewritten in place by byte spans, so
// everything but the image values stays byte for byte: comments, key order, quoting,
// anchors, document markers, line endings. A text scan could not tell a pod's image from an
// "image:" line inside a ConfigMap's block scalar; a parse-and-dump round trip would lose the
// comments and the formatting.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace regpin::proxy::cli {

struct yaml_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct yaml_image {
    std::size_t begin = 0, end = 0;  // the scalar's bytes in the text, quotes included
    std::string value;               // what it says
    char style = 0;                  // 0 plain, '\'' or '"' quoted, '|' a block scalar
    std::size_t line = 0;            // 1-based, for messages
};

// The container images of every document in `text`: the `image` of each item of a
// `containers`, `initContainers` or `ephemeralContainers` sequence, at any depth (Pods, the pod
// templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, List
// items, custom resources that embed a pod spec). `image: *alias` yields the anchored scalar
// (once). In text order. Throws yaml_error ("line L, column C: ...") when the text is not YAML.
std::vector<yaml_image> find_images(std::string_view text);

// `text` with images[i] replaced by values[i] in the same style ('...' stays single-quoted).
// Throws yaml_error for a block-scalar image (write it on one line) or a value that a plain
// scalar cannot hold.
std::string replace_images(std::string_view text, const std::vector<yaml_image>& images,
                           const std::vector<std::string>& values);

}  // namespace regpin::proxy::cli
