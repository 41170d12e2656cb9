// What a pipeline or the API server hands regpin at deploy time: any YAML gives the images of
// its container lists or a yaml_error, and rewriting them keeps every other byte; any JSON gives
// an AdmissionReview answer or the reason it is not one. Never a crash, never a write outside a
// found span.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/admission/review.hpp"
#include "proxy/cli/yaml_images.hpp"

namespace {

void yaml(const std::string& text) {
    std::vector<regpin::proxy::cli::yaml_image> found;
    try {
        found = regpin::proxy::cli::find_images(text);
    } catch (const regpin::proxy::cli::yaml_error&) {
        return;
    }
    std::vector<std::string> values;
    for (const auto& f : found) values.push_back("a:1@sha256:0");
    std::string out;
    try {
        out = regpin::proxy::cli::replace_images(text, found, values);
    } catch (const regpin::proxy::cli::yaml_error&) {
        return;  // a block-scalar image
    }
    // Every byte outside the spans is where it was.
    std::size_t at = 0, shift = 0;
    for (std::size_t i = 0; i < found.size(); ++i) {
        if (out.compare(at + shift, found[i].begin - at, text, at, found[i].begin - at) != 0)
            __builtin_trap();
        std::size_t quotes = found[i].style == 0 ? 0 : 2;
        shift += values[i].size() + quotes - (found[i].end - found[i].begin);
        at = found[i].end;
    }
    if (out.compare(at + shift, std::string::npos, text, at) != 0) __builtin_trap();
}

void review(const std::string& text) {
    using namespace regpin::proxy::admission;
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !invalid_review(j).empty()) return;
    const auto& request = j["request"];
    std::vector<decision> decisions;
    for (const char* kind : {"Pod", "Deployment", "CronJob", "PodTemplate"}) {
        if (!request.contains("object")) break;
        for (const auto& s : images_of(request["object"], kind))
            decisions.push_back({s.pointer, s.image, "sha256:0", ""});
    }
    auto a = answer(j, decisions, false);
    if (a["response"]["uid"] != request["uid"]) __builtin_trap();
    answer(j, decisions, true);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] & 1)
        review(input);
    else
        yaml(input);
    return 0;
}
