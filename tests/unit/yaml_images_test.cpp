// regpin resolve's YAML rewriting: only container images change, everything else stays byte
// for byte (issue 17, point 2).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/cli/yaml_images.hpp"

using regpin::proxy::cli::find_images;
using regpin::proxy::cli::replace_images;
using regpin::proxy::cli::yaml_error;
using regpin::proxy::cli::yaml_image;

namespace {

std::vector<std::string> values(const std::vector<yaml_image>& found) {
    std::vector<std::string> out;
    for (const auto& i : found) out.push_back(i.value);
    return out;
}

// Every image gets "@sha256:<n>" appended, n counting from 1.
std::string pin_all(const std::string& text) {
    auto found = find_images(text);
    std::vector<std::string> v;
    for (std::size_t i = 0; i < found.size(); ++i)
        v.push_back(found[i].value + "@sha256:" + std::to_string(i + 1));
    return replace_images(text, found, v);
}

}  // namespace

// helm template output: "# Source:" comments, several documents, a ConfigMap whose block
// scalar holds YAML with an image line (not a container: untouched), quoting of each kind,
// comments after values, init and ephemeral containers, a CronJob and a List.
TEST(YamlImages, RewritesOnlyContainerImagesAndKeepsEverythingElse) {
    const std::string in = R"(---
# Source: app/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config   # the app's settings
data:
  sidecar.yaml: |
    containers:
      - name: x
        image: busybox:1.36
  image: "not-a-container:1"
---
# Source: app/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, labels: {app: web}}
spec:
  template:
    spec:
      initContainers:
      - name: init
        image: 'ghcr.io/org/init:v2'   # quoted once
      containers:
        - name: web
          image: nginx:1.27 # the web server
          ports: [{containerPort: 80}]
        - image: "registry.k8s.io/pause:3.9"
          name: pause
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: job, image: alpine:3.20}]
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: debug
  spec:
    ephemeralContainers:
    - name: dbg
      image: busybox
...
)";
    auto found = find_images(in);
    EXPECT_EQ(values(found),
              (std::vector<std::string>{"ghcr.io/org/init:v2", "nginx:1.27",
                                        "registry.k8s.io/pause:3.9", "alpine:3.20", "busybox"}));
    EXPECT_EQ(found[0].style, '\'');
    EXPECT_EQ(found[1].style, 0);
    EXPECT_EQ(found[2].style, '"');
    EXPECT_EQ(found[1].line, 26u);

    auto out = pin_all(in);
    std::string want = in;
    for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"'ghcr.io/org/init:v2'", "'ghcr.io/org/init:v2@sha256:1'"},
             {"image: nginx:1.27 #", "image: nginx:1.27@sha256:2 #"},
             {"\"registry.k8s.io/pause:3.9\"", "\"registry.k8s.io/pause:3.9@sha256:3\""},
             {"image: alpine:3.20}", "image: alpine:3.20@sha256:4}"},
             {"image: busybox\n...", "image: busybox@sha256:5\n..."}}) {
        auto at = want.find(from);
        ASSERT_NE(at, std::string::npos) << from;
        want.replace(at, from.size(), to);
    }
    EXPECT_EQ(out, want);
    // Run again on its own output: nothing new to find but the same images, pinned.
    EXPECT_EQ(find_images(out).size(), 5u);
}

// Anchors and aliases: the anchored scalar is rewritten once, where it is defined, so every
// alias of it gets the pin; the alias itself is not touched.
TEST(YamlImages, AnchorsAndAliasesRewriteTheAnchoredScalar) {
    const std::string in =
        "x-common: &img \"quay.io/org/app:1.0\"\n"
        "kind: Pod\n"
        "spec:\n"
        "  containers:\n"
        "  - name: a\n"
        "    image: *img\n"
        "  - name: b\n"
        "    image: &other !!str   quay.io/org/b:2\n"
        "  - name: c\n"
        "    image: *other\n";
    auto found = find_images(in);
    ASSERT_EQ(values(found), (std::vector<std::string>{"quay.io/org/app:1.0", "quay.io/org/b:2"}));
    EXPECT_EQ(pin_all(in),
              "x-common: &img \"quay.io/org/app:1.0@sha256:1\"\n"
              "kind: Pod\n"
              "spec:\n"
              "  containers:\n"
              "  - name: a\n"
              "    image: *img\n"
              "  - name: b\n"
              "    image: &other !!str   quay.io/org/b:2@sha256:2\n"
              "  - name: c\n"
              "    image: *other\n");
}

// Non-ASCII text before an image (libyaml counts characters, the rewrite bytes), CRLF line
// endings, a byte-order mark, and a kustomize-style document without a leading marker.
TEST(YamlImages, KeepsBytesWithUtf8CrlfAndBom) {
    const std::string in =
        "\xEF\xBB\xBF# d\xC3\xA9ploiement \xE2\x80\x94 \xF0\x9F\x9A\x80\r\n"
        "kind: Pod\r\n"
        "metadata:\r\n"
        "  annotations: {note: \"caf\xC3\xA9\"}\r\n"
        "spec:\r\n"
        "  containers:\r\n"
        "  - image: nginx:1.27\r\n"
        "    name: web\r\n";
    auto out = pin_all(in);
    std::string want = in;
    auto at = want.find("nginx:1.27");
    want.insert(at + 10, "@sha256:1");
    EXPECT_EQ(out, want);
    // Without the mark: the same, three bytes earlier.
    EXPECT_EQ(pin_all(in.substr(3)), want.substr(3));
}

// Only container lists: an "image" elsewhere (a custom resource's field, a value in an
// annotation) is not a container image.
TEST(YamlImages, IgnoresImageKeysOutsideContainerLists) {
    const std::string in =
        "kind: Thing\n"
        "spec:\n"
        "  image: app:1\n"
        "  template:\n"
        "    image: app:2\n"
        "  containers:\n"
        "    image: app:3\n"  // a mapping, not a list of containers
        "  list:\n"
        "  - image: app:4\n";
    EXPECT_TRUE(find_images(in).empty());
}

TEST(YamlImages, BadYamlAndBlockScalarImagesAreClearErrors) {
    try {
        find_images("kind: Pod\nspec:\n  containers:\n  - image: [unclosed\n");
        FAIL() << "no error";
    } catch (const yaml_error& e) {
        EXPECT_NE(std::string(e.what()).find("line "), std::string::npos) << e.what();
    }
    const std::string block = "spec:\n  containers:\n  - image: |\n      nginx:1\n";
    auto found = find_images(block);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].style, '|');
    EXPECT_THROW(replace_images(block, found, {"nginx:1@sha256:1"}), yaml_error);
    auto plain = find_images("spec:\n  containers:\n  - image: a:1\n");
    EXPECT_THROW(replace_images("spec:\n  containers:\n  - image: a:1\n", plain, {"a b"}),
                 yaml_error);
}
