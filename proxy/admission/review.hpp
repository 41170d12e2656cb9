#pragma once
// The Kubernetes side of the admission webhook (issue 17), as pure functions over JSON: where
// an object's container images are, what a pinned image is called, and the AdmissionReview
// answer (admission.k8s.io/v1) with its JSONPatch. No I/O; webhook.hpp asks regpin.

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace regpin::proxy::admission {

// One container's image in an object: the JSON pointer of its "image" field
// ("/spec/template/spec/containers/0/image") and its value.
struct image_site {
    std::string pointer;
    std::string image;
};

// The JSON pointer of the pod spec in an object of `kind`: Pod "/spec"; Deployment,
// StatefulSet, DaemonSet, ReplicaSet, Job, ReplicationController "/spec/template/spec";
// PodTemplate "/template/spec"; CronJob "/spec/jobTemplate/spec/template/spec". nullopt for
// any other kind.
std::optional<std::string> pod_spec_pointer(std::string_view kind);

// Every container, init container and ephemeral container image of `object` (of `kind`).
std::vector<image_site> images_of(const nlohmann::json& object, std::string_view kind);

// How an image should be written to get its pin: "nginx:1.27" and
// "sha256:..." -> "nginx:1.27@sha256:...". The name as the object wrote it is kept (short
// Docker Hub names too), so the object still says which tag it meant.
std::string with_digest(const std::string& image, const std::string& digest);

// Whether an image names a digest already ("app@sha256:...", "app:v1@sha256:...").
bool names_digest(const std::string& image);

// What regpin decided for one image of the object.
struct decision {
    std::string pointer;
    std::string image;
    std::optional<std::string> digest;  // pinned: the patch writes image@digest
    std::string note;                   // a warning (pending re-point) or why it is unpinned
};

// The AdmissionReview answer to `review` (a request's "uid" is copied): a JSONPatch replacing
// each decided image, warnings for notes, and with `deny` (images left unpinned under
// admission.unpinned "deny") allowed=false, code 403, a message naming each.
nlohmann::json answer(const nlohmann::json& review, const std::vector<decision>& decisions,
                      bool deny);

// The reason a body is not an AdmissionReview v1 request regpin can answer, or empty.
std::string invalid_review(const nlohmann::json& review);

}  // namespace regpin::proxy::admission
