#include "proxy/oci/media_types.hpp"

namespace regpin::proxy::oci {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

std::string strip_parameters(std::string_view content_type) {
    auto semi = content_type.find(';');
    return std::string(trim(content_type.substr(0, semi)));
}

bool accept_class_admits(std::uint8_t cls, std::string_view media_type) {
    if (cls == 0) return true;
    // The type's own class: one bit for a known type, none for others.
    return (accept_class(media_type) & cls) != 0;
}

std::string accept_for_class(std::uint8_t c) {
    std::string out;
    auto add = [&](std::string_view t) {
        if (!out.empty()) out += ", ";
        out += t;
    };
    if (c & accepts_docker_manifest) add(docker_manifest);
    if (c & accepts_docker_manifest_list) add(docker_manifest_list);
    if (c & accepts_oci_manifest) add(oci_manifest);
    if (c & accepts_oci_index) add(oci_index);
    if (!out.empty()) add("*/*");
    return out;
}

std::uint8_t accept_class(std::string_view accept) {
    std::uint8_t cls = 0;
    while (!accept.empty()) {
        auto comma = accept.find(',');
        auto item = strip_parameters(accept.substr(0, comma));
        if (item == docker_manifest)
            cls |= accepts_docker_manifest;
        else if (item == docker_manifest_list)
            cls |= accepts_docker_manifest_list;
        else if (item == oci_manifest)
            cls |= accepts_oci_manifest;
        else if (item == oci_index)
            cls |= accepts_oci_index;
        if (comma == std::string_view::npos) break;
        accept.remove_prefix(comma + 1);
    }
    return cls;
}

}  // namespace regpin::proxy::oci
