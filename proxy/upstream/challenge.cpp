#include "proxy/upstream/challenge.hpp"

#include <cctype>

namespace regpin::proxy::upstream {

std::optional<challenge> parse_challenge(std::string_view h) {
    auto is_space = [](char c) { return c == ' ' || c == '\t'; };
    while (!h.empty() && is_space(h.front())) h.remove_prefix(1);
    auto sp = h.find(' ');
    challenge c;
    c.scheme = std::string(h.substr(0, sp));
    if (c.scheme.empty()) return std::nullopt;
    for (auto& ch : c.scheme) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (sp == std::string_view::npos) return c;
    h.remove_prefix(sp + 1);
    while (!h.empty()) {
        while (!h.empty() && (is_space(h.front()) || h.front() == ',')) h.remove_prefix(1);
        auto eq = h.find('=');
        if (eq == std::string_view::npos) break;
        std::string key(h.substr(0, eq));
        while (!key.empty() && is_space(key.back())) key.pop_back();
        h.remove_prefix(eq + 1);
        std::string value;
        if (!h.empty() && h.front() == '"') {
            h.remove_prefix(1);
            while (!h.empty() && h.front() != '"') {
                if (h.front() == '\\' && h.size() > 1) h.remove_prefix(1);
                value.push_back(h.front());
                h.remove_prefix(1);
            }
            if (h.empty()) return std::nullopt;  // unterminated quote
            h.remove_prefix(1);
        } else {
            auto end = h.find(',');
            value = std::string(h.substr(0, end));
            while (!value.empty() && is_space(value.back())) value.pop_back();
            h.remove_prefix(end == std::string_view::npos ? h.size() : end);
        }
        for (auto& ch : key) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (key == "realm")
            c.realm = value;
        else if (key == "service")
            c.service = value;
        else if (key == "scope")
            c.scope = value;
        else if (key == "error")
            c.error = value;
    }
    return c;
}

}  // namespace regpin::proxy::upstream
