#include "proxy/oci/errors.hpp"

#include <stdexcept>

#include <nlohmann/json.hpp>

namespace regpin::proxy::oci {

unsigned error::status() const {
    switch (code) {
        case error_code::digest_invalid:
        case error_code::manifest_invalid:
        case error_code::name_invalid:
        case error_code::tag_invalid:
        case error_code::pagination_number_invalid:
            return 400;
        case error_code::unauthorized:
            return 401;
        case error_code::denied:
            return 403;
        case error_code::blob_unknown:
        case error_code::manifest_unknown:
        case error_code::name_unknown:
            return 404;
        case error_code::unsupported:
            return 405;
        case error_code::range_invalid:
            return 416;
        case error_code::unavailable:
            return 503;
        case error_code::unknown:
            return 500;
    }
    return 500;
}

std::string_view error::code_name() const {
    switch (code) {
        case error_code::blob_unknown:
            return "BLOB_UNKNOWN";
        case error_code::digest_invalid:
            return "DIGEST_INVALID";
        case error_code::manifest_invalid:
            return "MANIFEST_INVALID";
        case error_code::manifest_unknown:
            return "MANIFEST_UNKNOWN";
        case error_code::name_invalid:
            return "NAME_INVALID";
        case error_code::name_unknown:
            return "NAME_UNKNOWN";
        case error_code::tag_invalid:
            return "TAG_INVALID";
        case error_code::range_invalid:
            return "RANGE_INVALID";
        case error_code::pagination_number_invalid:
            return "PAGINATION_NUMBER_INVALID";
        case error_code::unauthorized:
            return "UNAUTHORIZED";
        case error_code::denied:
            return "DENIED";
        case error_code::unsupported:
            return "UNSUPPORTED";
        case error_code::unavailable:
            return "UNAVAILABLE";
        case error_code::unknown:
            return "UNKNOWN";
    }
    return "UNKNOWN";
}

void throw_exception_from_error(const error& e, const boost::source_location&) {
    throw std::runtime_error(std::string(e.code_name()) + ": " + e.message);
}

std::string error::body() const {
    auto detail = nlohmann::json::object();
    if (!detail_json.empty()) {
        auto parsed = nlohmann::json::parse(detail_json, nullptr, false);
        if (!parsed.is_discarded()) detail = std::move(parsed);
    }
    nlohmann::json e = {{"code", code_name()}, {"message", message}, {"detail", detail}};
    nlohmann::json j = {{"errors", nlohmann::json::array({e})}};
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace regpin::proxy::oci
