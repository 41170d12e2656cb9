#include "proxy/admission/review.hpp"

#include <openssl/evp.h>

namespace regpin::proxy::admission {

using nlohmann::json;

namespace {

std::string base64(const std::string& in) {
    std::string out(4 * ((in.size() + 2) / 3), '\0');
    auto n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                             reinterpret_cast<const unsigned char*>(in.data()),
                             static_cast<int>(in.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

}  // namespace

std::optional<std::string> pod_spec_pointer(std::string_view kind) {
    if (kind == "Pod") return "/spec";
    if (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" ||
        kind == "ReplicaSet" || kind == "Job" || kind == "ReplicationController")
        return "/spec/template/spec";
    if (kind == "PodTemplate") return "/template/spec";
    if (kind == "CronJob") return "/spec/jobTemplate/spec/template/spec";
    return std::nullopt;
}

std::vector<image_site> images_of(const json& object, std::string_view kind) {
    std::vector<image_site> out;
    auto spec_ptr = pod_spec_pointer(kind);
    if (!spec_ptr || !object.is_object()) return out;
    json::json_pointer ptr(*spec_ptr);
    if (!object.contains(ptr)) return out;
    const auto& spec = object.at(ptr);
    if (!spec.is_object()) return out;
    for (const char* list : {"initContainers", "containers", "ephemeralContainers"}) {
        auto it = spec.find(list);
        if (it == spec.end() || !it->is_array()) continue;
        for (std::size_t i = 0; i < it->size(); ++i) {
            const auto& c = (*it)[i];
            if (!c.is_object() || !c.contains("image") || !c["image"].is_string()) continue;
            out.push_back({*spec_ptr + "/" + list + "/" + std::to_string(i) + "/image",
                           c["image"].get<std::string>()});
        }
    }
    return out;
}

bool names_digest(const std::string& image) { return image.find('@') != std::string::npos; }

std::string with_digest(const std::string& image, const std::string& digest) {
    return image + "@" + digest;
}

std::string invalid_review(const json& review) {
    if (!review.is_object()) return "the body is not a JSON object";
    auto is = [&](const char* key, const char* want) {
        auto it = review.find(key);
        return it != review.end() && it->is_string() && *it == want;
    };
    if (!is("apiVersion", "admission.k8s.io/v1") || !is("kind", "AdmissionReview"))
        return "not an AdmissionReview of admission.k8s.io/v1 (apiVersion, kind)";
    auto it = review.find("request");
    if (it == review.end() || !it->is_object()) return "no request";
    if (!it->contains("uid") || !(*it)["uid"].is_string()) return "the request has no uid";
    return {};
}

json answer(const json& review, const std::vector<decision>& decisions, bool deny) {
    json response = {{"uid", review["request"]["uid"]}, {"allowed", !deny}};
    json warnings = json::array();
    for (const auto& d : decisions)
        if (!d.note.empty()) warnings.push_back("regpin: " + d.note);
    if (deny) {
        std::string message = "regpin cannot pin ";
        bool first = true;
        for (const auto& d : decisions) {
            if (d.digest) continue;
            message += (first ? "" : "; ") + d.image + " (" + d.note + ")";
            first = false;
        }
        response["status"] = {{"code", 403}, {"message", message}};
    } else {
        json patch = json::array();
        for (const auto& d : decisions)
            if (d.digest)
                patch.push_back({{"op", "replace"},
                                 {"path", d.pointer},
                                 {"value", with_digest(d.image, *d.digest)}});
        if (!patch.empty()) {
            response["patchType"] = "JSONPatch";
            response["patch"] = base64(patch.dump());
        }
    }
    if (!warnings.empty()) response["warnings"] = warnings;
    return {
        {"apiVersion", "admission.k8s.io/v1"}, {"kind", "AdmissionReview"}, {"response", response}};
}

}  // namespace regpin::proxy::admission
