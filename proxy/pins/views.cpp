#include "proxy/pins/views.hpp"

#include <cstdio>
#include <ctime>

namespace regpin::proxy::pins {

using nlohmann::json;

std::string format_time(std::int64_t unix_ms) {
    std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(unix_ms % 1000));
    return buf;
}

std::optional<std::int64_t> parse_time(const std::string& s) {
    if (s.empty()) return std::nullopt;
    if (s.find_first_not_of("0123456789") == std::string::npos && s.size() <= 15)
        return std::stoll(s);
    std::tm tm{};
    int y, mo, d, h, mi, sec;
    char rest[32] = {0};
    if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%31s", &y, &mo, &d, &h, &mi, &sec, rest) < 6)
        return std::nullopt;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    std::int64_t ms = static_cast<std::int64_t>(timegm(&tm)) * 1000;
    std::string r = rest;
    std::size_t i = 0;
    if (i < r.size() && r[i] == '.') {
        std::string frac;
        for (++i; i < r.size() && std::isdigit(static_cast<unsigned char>(r[i])); ++i) frac += r[i];
        frac.resize(3, '0');
        ms += std::stoi(frac.substr(0, 3));
    }
    if (i < r.size() && (r[i] == '+' || r[i] == '-')) {
        int oh = 0, om = 0;
        if (std::sscanf(r.c_str() + i + 1, "%2d:%2d", &oh, &om) != 2) return std::nullopt;
        std::int64_t offset = (oh * 60 + om) * 60000;
        ms += r[i] == '+' ? -offset : offset;
    } else if (i < r.size() && r[i] != 'Z') {
        return std::nullopt;
    }
    return ms;
}

json pin_json(const storage::pin& p) {
    json j = {{"registry", p.key.registry},
              {"repository", p.key.repository},
              {"tag", p.key.tag},
              {"reference", storage::display_name(p.key)},
              {"accept_class", p.key.accept_class},
              {"digest", p.manifest_digest.str()},
              {"media_type", p.media_type},
              {"size", p.size},
              {"state", std::string(storage::to_string(p.state))},
              {"first_seen", format_time(p.first_seen_ms)},
              {"last_verified", format_time(p.last_verified_ms)},
              {"pending_digest", nullptr},
              {"pending_since", nullptr}};
    if (p.pending_digest) {
        j["pending_digest"] = p.pending_digest->str();
        j["pending_since"] = format_time(p.pending_since_ms);
    }
    return j;
}

json event_json(const storage::pin_event& e) {
    json j = {{"id", e.id},
              {"time", format_time(e.time_ms)},
              {"type", std::string(storage::to_string(e.type))},
              {"registry", e.key.registry},
              {"repository", e.key.repository},
              {"tag", e.key.tag},
              {"reference", storage::display_name(e.key)},
              {"accept_class", e.key.accept_class},
              {"old_digest", e.old_digest.empty() ? json(nullptr) : json(e.old_digest)},
              {"new_digest", e.new_digest.empty() ? json(nullptr) : json(e.new_digest)},
              {"actor", e.actor},
              {"policy", e.policy.empty() ? json(nullptr) : json(e.policy)},
              {"action", e.action.empty() ? json(nullptr) : json(e.action)},
              {"source", e.source.empty() ? json(nullptr) : json(e.source)},
              {"summary", nullptr}};
    if (!e.summary_json.empty()) {
        auto s = json::parse(e.summary_json, nullptr, false);
        if (!s.is_discarded()) j["summary"] = std::move(s);
    }
    return j;
}

json alert_json(const storage::pin_event& e) {
    json summary = nullptr;
    if (!e.summary_json.empty()) {
        auto s = json::parse(e.summary_json, nullptr, false);
        if (!s.is_discarded()) summary = std::move(s);
    }
    return {{"id", e.id},
            {"type", "repoint"},
            {"registry", e.key.registry},
            {"repository", e.key.repository},
            {"tag", e.key.tag},
            {"reference", storage::display_name(e.key)},
            {"pinned_digest", e.old_digest},
            {"upstream_digest", e.new_digest},
            {"policy", e.policy},
            {"action", e.action},
            {"detected_at", format_time(e.time_ms)},
            {"source", e.source.empty() ? json(nullptr) : json(e.source)},
            {"summary", summary}};
}

}  // namespace regpin::proxy::pins
