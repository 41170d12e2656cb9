#include "proxy/http/log_json.hpp"

#include <ctime>
#include <memory>

#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace regpin::proxy::http {

namespace {

// Marks a message that is already a JSON object's fields (request_fields). A control
// character no other message of regpin's starts with.
constexpr char fields_mark = '\x1e';

std::string quoted(std::string_view s) {
    return nlohmann::json(std::string(s))
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

class json_formatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        using namespace std::chrono;
        auto since = msg.time.time_since_epoch();
        auto secs = duration_cast<seconds>(since);
        auto millis = duration_cast<milliseconds>(since - secs).count();
        std::time_t t = secs.count();
        std::tm tm{};
        gmtime_r(&t, &tm);
        char stamp[40];
        auto n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        std::string line = "{\"time\":\"";
        line.append(stamp, n);
        char frac[8];
        std::snprintf(frac, sizeof frac, ".%03dZ", static_cast<int>(millis));
        line += frac;
        line += "\",\"level\":\"";
        auto level = spdlog::level::to_string_view(msg.level);
        line.append(level.data(), level.size());
        line += '"';
        std::string_view payload(msg.payload.data(), msg.payload.size());
        if (!payload.empty() && payload.front() == fields_mark) {
            payload.remove_prefix(1);
            line += ',';
            line.append(payload);
        } else {
            line += ",\"msg\":";
            line += quoted(payload);
        }
        line += "}\n";
        dest.append(line.data(), line.data() + line.size());
    }
    std::unique_ptr<spdlog::formatter> clone() const override {
        return std::make_unique<json_formatter>();
    }
};

}  // namespace

void use_json_logs() { spdlog::set_formatter(std::make_unique<json_formatter>()); }

std::string request_fields(const request_line& r) {
    nlohmann::ordered_json j = {
        {"listener", r.listener},
        {"peer", r.peer},
        {"node", r.node.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(r.node)},
        {"method", r.method},
        {"target", r.target},
        {"status", r.status},
        {"bytes", r.bytes},
        {"ms", static_cast<double>(static_cast<std::int64_t>(r.ms * 10)) / 10}};
    for (const auto& [k, v] : r.fields)
        j[std::string(k)] = v == "-" ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v);
    auto text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    // The object without its braces: the formatter adds time and level around it.
    return std::string(1, fields_mark) + text.substr(1, text.size() - 2);
}

}  // namespace regpin::proxy::http
