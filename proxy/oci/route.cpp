#include "proxy/oci/route.hpp"

#include <cctype>

#include <boost/url/parse.hpp>

#include "storage/digest.hpp"

namespace regpin::proxy::oci {

namespace {

bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// component := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
bool valid_component(std::string_view c) {
    if (c.empty() || !lower_alnum(c.front()) || !lower_alnum(c.back())) return false;
    for (std::size_t i = 0; i < c.size();) {
        if (lower_alnum(c[i])) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < c.size() && !lower_alnum(c[j])) ++j;
        auto sep = c.substr(i, j - i);
        bool ok = sep == "." || sep == "_" || sep == "__" ||
                  sep.find_first_not_of('-') == std::string_view::npos;
        if (!ok) return false;
        i = j;
    }
    return true;
}

error invalid_name(std::string_view name) {
    return {error_code::name_invalid,
            "invalid repository name '" + std::string(name.substr(0, 300)) + "'"};
}

std::optional<error> check_reference(endpoint kind, std::string_view ref) {
    using storage::digest;
    bool is_digest = ref.find(':') != std::string_view::npos;
    if (kind == endpoint::manifest && !is_digest) {
        if (!valid_tag(ref))
            return error{error_code::tag_invalid,
                         "invalid tag '" + std::string(ref.substr(0, 200)) + "'"};
        return std::nullopt;
    }
    switch (digest::classify(ref)) {
        case digest::problem::none:
            return std::nullopt;
        case digest::problem::unsupported_algorithm:
            return error{error_code::digest_invalid, "unsupported digest algorithm in '" +
                                                         std::string(ref.substr(0, 200)) +
                                                         "': regpin verifies sha256 and sha512"};
        case digest::problem::malformed:
            break;
    }
    return error{error_code::digest_invalid,
                 "invalid digest '" + std::string(ref.substr(0, 200)) + "'"};
}

}  // namespace

bool valid_repository(std::string_view name) {
    if (name.empty() || name.size() > 255) return false;
    while (true) {
        auto slash = name.find('/');
        if (!valid_component(name.substr(0, slash))) return false;
        if (slash == std::string_view::npos) return true;
        name.remove_prefix(slash + 1);
    }
}

bool valid_tag(std::string_view tag) {
    if (tag.empty() || tag.size() > 128) return false;
    auto word = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_';
    };
    if (!word(tag.front())) return false;
    for (char c : tag.substr(1))
        if (!word(c) && c != '.' && c != '-') return false;
    return true;
}

bool looks_like_registry_host(std::string_view c) {
    return c == "localhost" || c.find('.') != std::string_view::npos ||
           c.find(':') != std::string_view::npos;
}

bool valid_registry_host(std::string_view c) {
    if (c.empty() || c.size() > 255) return false;
    auto colon = c.rfind(':');
    if (colon != std::string_view::npos) {
        auto port = c.substr(colon + 1);
        if (port.empty() || port.size() > 5 ||
            port.find_first_not_of("0123456789") != std::string_view::npos)
            return false;
        c = c.substr(0, colon);
    }
    // DNS labels: [A-Za-z0-9-]{1,63}, no '-' at either end; IPv4 is a special case of it.
    while (true) {
        auto dot = c.find('.');
        auto label = c.substr(0, dot);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
            return false;
        for (char ch : label)
            if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-') return false;
        if (dot == std::string_view::npos) return true;
        c.remove_prefix(dot + 1);
    }
}

bool is_digest_reference(std::string_view reference) {
    return reference.find(':') != std::string_view::npos;
}

result<route> parse_route(std::string_view target) {
    auto parsed = boost::urls::parse_origin_form(target);
    if (!parsed) return error{error_code::name_invalid, "malformed request target"};
    auto path = parsed->encoded_path();
    // Every valid name, tag and digest is plain ASCII: an encoded byte can only be a trick
    // (%2e%2e, %2f) and is refused before anything else looks at the path.
    if (path.find('%') != std::string_view::npos)
        return error{error_code::name_invalid,
                     "percent-encoded characters are not allowed in names"};

    route r;
    for (auto p : parsed->params()) {
        if (!p.has_value) continue;
        if (p.key == "ns")
            r.ns = std::string(p.value);
        else if (p.key == "n")
            r.n = std::string(p.value);
        else if (p.key == "last")
            r.last = std::string(p.value);
        else if (p.key == "artifactType")
            r.artifact_type = std::string(p.value);
    }

    std::string_view rest = path;
    if (rest == "/v2" || rest == "/v2/") {
        r.kind = endpoint::base;
        return r;
    }
    if (rest.substr(0, 4) != "/v2/")
        return error{error_code::name_unknown, "not a registry API path; regpin serves /v2/"};
    rest.remove_prefix(4);

    // Names hold slashes, so split at the last API keyword.
    constexpr std::string_view tags_suffix = "/tags/list";
    if (rest.size() > tags_suffix.size() && rest.ends_with(tags_suffix)) {
        r.kind = endpoint::tags_list;
        r.name = std::string(rest.substr(0, rest.size() - tags_suffix.size()));
    } else {
        struct kw {
            std::string_view text;
            endpoint kind;
        };
        static constexpr kw keywords[] = {{"/manifests/", endpoint::manifest},
                                          {"/blobs/", endpoint::blob},
                                          {"/referrers/", endpoint::referrers}};
        std::size_t best = std::string_view::npos;
        const kw* which = nullptr;
        for (const auto& k : keywords) {
            auto pos = rest.rfind(k.text);
            if (pos != std::string_view::npos && (best == std::string_view::npos || pos > best)) {
                best = pos;
                which = &k;
            }
        }
        if (which == nullptr) return error{error_code::name_unknown, "not a pull API path"};
        r.kind = which->kind;
        r.name = std::string(rest.substr(0, best));
        r.reference = std::string(rest.substr(best + which->text.size()));
        if (r.kind == endpoint::blob && r.reference.rfind("uploads", 0) == 0)
            return error{error_code::unsupported,
                         "regpin is a pull-through cache: pushes are not supported"};
        if (r.reference.empty() || r.reference.find('/') != std::string::npos)
            return error{error_code::name_unknown, "not a pull API path"};
        if (auto e = check_reference(r.kind, r.reference)) return *e;
    }
    // The name may start with a registry host prefix ("127.0.0.1:5000/team/app"); the host is
    // checked when routing, the rest here.
    std::string_view repo = r.name;
    auto slash = repo.find('/');
    if (slash != std::string_view::npos && looks_like_registry_host(repo.substr(0, slash))) {
        // ".", "..", "-evil.com": never a registry, and never a repository either.
        if (!valid_registry_host(repo.substr(0, slash))) return invalid_name(r.name);
        repo.remove_prefix(slash + 1);
    }
    if (!valid_repository(repo)) return invalid_name(r.name);
    return r;
}

}  // namespace regpin::proxy::oci
