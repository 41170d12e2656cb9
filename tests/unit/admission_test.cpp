// The admission webhook's Kubernetes side: where the images of each kind are, and the
// AdmissionReview answer in admission.k8s.io/v1's exact shape (issue 17, point 3).
#include <gtest/gtest.h>

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "proxy/admission/review.hpp"

using nlohmann::json;
using namespace regpin::proxy::admission;

namespace {

std::string unbase64(const std::string& in) {
    std::string out(in.size(), '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()),
                            static_cast<int>(in.size()));
    EXPECT_GE(n, 0);
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '\0') out.pop_back();  // the padding's zero bytes
    return out;
}

json review_of(const std::string& kind, const json& object) {
    return {{"apiVersion", "admission.k8s.io/v1"},
            {"kind", "AdmissionReview"},
            {"request",
             {{"uid", "705ab4f5-6393-11e8-b7cc-42010a800002"},
              {"kind", {{"group", kind == "Pod" ? "" : "apps"}, {"version", "v1"}, {"kind", kind}}},
              {"resource", {{"group", ""}, {"version", "v1"}, {"resource", "pods"}}},
              {"namespace", "team"},
              {"operation", "CREATE"},
              {"userInfo", {{"username", "alice"}}},
              {"object", object},
              {"oldObject", nullptr},
              {"dryRun", false}}}};
}

}  // namespace

TEST(Admission, FindsImagesOfEveryWorkloadKind) {
    json spec = {
        {"initContainers", {{{"name", "i"}, {"image", "busybox:1.36"}}}},
        {"containers",
         {{{"name", "a"}, {"image", "nginx:1.27"}}, {{"name", "b"}, {"image", "app@sha256:abc"}}}},
        {"ephemeralContainers", {{{"name", "d"}, {"image", "alpine"}}}}};
    auto pod = images_of({{"spec", spec}}, "Pod");
    ASSERT_EQ(pod.size(), 4u);
    EXPECT_EQ(pod[0].pointer, "/spec/initContainers/0/image");
    EXPECT_EQ(pod[1].pointer, "/spec/containers/0/image");
    EXPECT_EQ(pod[2].pointer, "/spec/containers/1/image");
    EXPECT_EQ(pod[3].pointer, "/spec/ephemeralContainers/0/image");
    EXPECT_EQ(pod[3].image, "alpine");
    for (auto kind :
         {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}) {
        auto found = images_of({{"spec", {{"template", {{"spec", spec}}}}}}, kind);
        ASSERT_EQ(found.size(), 4u) << kind;
        EXPECT_EQ(found[1].pointer, "/spec/template/spec/containers/0/image") << kind;
    }
    auto cron = images_of(
        {{"spec", {{"jobTemplate", {{"spec", {{"template", {{"spec", spec}}}}}}}}}}, "CronJob");
    ASSERT_EQ(cron.size(), 4u);
    EXPECT_EQ(cron[1].pointer, "/spec/jobTemplate/spec/template/spec/containers/0/image");
    EXPECT_TRUE(images_of({{"spec", spec}}, "Service").empty());
    EXPECT_TRUE(images_of({{"spec", "not an object"}}, "Pod").empty());
    EXPECT_TRUE(names_digest("app@sha256:abc"));
    EXPECT_FALSE(names_digest("127.0.0.1:5000/app:v1"));
}

TEST(Admission, AnswerIsAnAdmissionReviewWithAJsonPatch) {
    auto review = review_of("Pod", {{"spec", {{"containers", {{{"image", "nginx:1.27"}}}}}}});
    EXPECT_EQ(invalid_review(review), "");
    std::vector<decision> d = {
        {"/spec/containers/0/image", "nginx:1.27", "sha256:1111", ""},
        {"/spec/containers/1/image", "quay.io/x:1", "sha256:2222",
         "quay.io/x:1: the upstream moved it to sha256:3333; regpin keeps sha256:2222"}};
    auto a = answer(review, d, false);
    EXPECT_EQ(a["apiVersion"], "admission.k8s.io/v1");
    EXPECT_EQ(a["kind"], "AdmissionReview");
    const auto& r = a["response"];
    EXPECT_EQ(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    EXPECT_EQ(r["allowed"], true);
    EXPECT_EQ(r["patchType"], "JSONPatch");
    auto patch = json::parse(unbase64(r["patch"].get<std::string>()));
    EXPECT_EQ(patch, json::parse(R"([
        {"op":"replace","path":"/spec/containers/0/image","value":"nginx:1.27@sha256:1111"},
        {"op":"replace","path":"/spec/containers/1/image","value":"quay.io/x:1@sha256:2222"}])"));
    ASSERT_EQ(r["warnings"].size(), 1u);
    EXPECT_FALSE(r.contains("status"));
    // Nothing to change: no patch at all (the API server takes an absent patchType as none).
    auto none = answer(review, {}, false)["response"];
    EXPECT_FALSE(none.contains("patch"));
    EXPECT_FALSE(none.contains("patchType"));
    EXPECT_EQ(none["allowed"], true);
}

TEST(Admission, DenyNamesEachUnpinnedImageAndPatchesNothing) {
    auto review = review_of("Deployment", json::object());
    std::vector<decision> d = {
        {"/spec/template/spec/containers/0/image", "nginx:1.27", "sha256:1111", ""},
        {"/spec/template/spec/containers/1/image", "other.example/x:1", std::nullopt,
         "other.example/x:1: no upstream is configured for registry 'other.example'"}};
    auto r = answer(review, d, true)["response"];
    EXPECT_EQ(r["allowed"], false);
    EXPECT_EQ(r["status"]["code"], 403);
    auto message = r["status"]["message"].get<std::string>();
    EXPECT_NE(message.find("other.example/x:1"), std::string::npos) << message;
    EXPECT_EQ(message.find("nginx"), std::string::npos) << message;
    EXPECT_FALSE(r.contains("patch"));
}

TEST(Admission, RefusesWhatIsNotAnAdmissionReviewV1) {
    EXPECT_NE(invalid_review(json::array()), "");
    EXPECT_NE(invalid_review({{"apiVersion", "admission.k8s.io/v1beta1"},
                              {"kind", "AdmissionReview"},
                              {"request", {{"uid", "x"}}}}),
              "");
    EXPECT_NE(invalid_review({{"apiVersion", "admission.k8s.io/v1"}, {"kind", "AdmissionReview"}}),
              "");
    EXPECT_NE(invalid_review({{"apiVersion", "admission.k8s.io/v1"},
                              {"kind", "AdmissionReview"},
                              {"request", {{"uid", 5}}}}),
              "");
}
