#pragma once
// The registry API's answers in the HTTP layer's terms: OCI error bodies (the spec's JSON
// format, with the status oci::error maps to) and the reply for regpin's own storage failing.

#include "proxy/http/message.hpp"
#include "proxy/oci/errors.hpp"

namespace regpin::proxy::registry {

using http::body_part;
using http::body_stream;
using http::incoming;
using http::reply;

// {"errors":[...]} with e.status() and Content-Type application/json.
reply error_reply(const oci::error& e);
// 500 UNKNOWN for regpin's own storage failing (logged); never for a client's mistake.
reply storage_failure(const char* what);
// storage::errc::unavailable (etcd unreachable) is 503 UNAVAILABLE with Retry-After; any other
// error is storage_failure(what).
reply storage_failure(const char* what, const boost::system::error_code& ec);

}  // namespace regpin::proxy::registry
