#include "proxy/oci/reference.hpp"

#include "proxy/oci/route.hpp"

namespace regpin::proxy::oci {

std::string hub_repository(std::string_view registry, std::string_view repository) {
    if (registry == config::docker_hub && repository.find('/') == std::string_view::npos)
        return "library/" + std::string(repository);
    return std::string(repository);
}

result<image_reference> parse_image_reference(std::string_view ref) {
    auto colon = ref.rfind(':');
    auto slash = ref.rfind('/');
    if (ref.find('@') != std::string_view::npos || colon == std::string_view::npos ||
        (slash != std::string_view::npos && colon < slash))
        return error{
            error_code::tag_invalid,
            "'" + std::string(ref) + "' must be REGISTRY/REPOSITORY:TAG (a tag, not a digest)"};
    image_reference r;
    r.tag = std::string(ref.substr(colon + 1));
    auto name = ref.substr(0, colon);
    auto first = name.find('/');
    if (first != std::string_view::npos && looks_like_registry_host(name.substr(0, first))) {
        r.registry = std::string(name.substr(0, first));
        r.repository = std::string(name.substr(first + 1));
    } else {
        r.registry = std::string(config::docker_hub);
        r.repository = std::string(name);
    }
    r.repository = hub_repository(r.registry, r.repository);
    if (!valid_repository(r.repository))
        return error{error_code::name_invalid,
                     "'" + std::string(ref) + "' is not a valid image reference"};
    if (!valid_tag(r.tag))
        return error{error_code::tag_invalid,
                     "'" + std::string(ref) + "' is not a valid image reference"};
    return r;
}

bool has_tag(std::string_view ref) {
    auto slash = ref.rfind('/');
    return ref.find(':', slash == std::string_view::npos ? 0 : slash) != std::string_view::npos;
}

result<image_reference> parse_image_name(std::string_view ref) {
    if (has_tag(ref)) return parse_image_reference(ref);
    return parse_image_reference(std::string(ref) + ":latest");
}

}  // namespace regpin::proxy::oci
