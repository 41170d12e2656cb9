#pragma once
// WWW-Authenticate challenges, as upstream registries send them. Pure parsing (the fuzz target
// links it alone).

#include <optional>
#include <string>
#include <string_view>

namespace regpin::proxy::upstream {

// A WWW-Authenticate value: scheme and its parameters (realm, service, scope, error).
struct challenge {
    std::string scheme;  // lower-cased: "bearer", "basic"
    std::string realm, service, scope, error;
};
// nullopt for an empty value or an unterminated quoted string.
std::optional<challenge> parse_challenge(std::string_view header);

}  // namespace regpin::proxy::upstream
