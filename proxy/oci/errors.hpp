#pragma once
// The OCI Distribution error codes and the one place they map to HTTP status.

#include <string>
#include <string_view>

#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>

namespace regpin::proxy::oci {

enum class error_code {
    blob_unknown,
    digest_invalid,
    manifest_invalid,
    manifest_unknown,
    name_invalid,
    name_unknown,
    tag_invalid,
    range_invalid,
    pagination_number_invalid,
    unauthorized,
    denied,
    unsupported,
    unavailable,  // upstream unreachable or failing and nothing cached
    unknown,      // regpin's own failure (storage); never for a client's mistake
};

struct error {
    error_code code = error_code::unknown;
    std::string message;
    // A JSON object with specifics (e.g. the digests of a rejected tag); empty gives {}.
    std::string detail_json;
    // Sent as Retry-After when not 0: the refusal is temporary (regpin's own limits, the pin
    // store unreachable, the upstream's quota).
    unsigned retry_after_s = 0;

    // HTTP status per the distribution error registry (protocol.md): 400, 404, 405, ...
    unsigned status() const;
    // "NAME_INVALID", ...
    std::string_view code_name() const;
    // {"errors":[{"code":"...","message":"...","detail":{}}]}
    std::string body() const;
};

// A value or the OCI error a client should get: how the pull path reports failure.
template <class T>
using result = boost::system::result<T, error>;

// For result<T>::value() on an error (not used by regpin's code, which tests before reading):
// throws std::runtime_error with the message.
[[noreturn]] void throw_exception_from_error(const error& e, const boost::source_location& loc);

}  // namespace regpin::proxy::oci
