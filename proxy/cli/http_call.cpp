#include "proxy/cli/http_call.hpp"

#include "proxy/http/client.hpp"

namespace regpin::proxy::cli {

namespace {

// The request and client options for `to`, or an error for a URL that is not http(s).
bool prepare(const server& to, const std::string& target, std::chrono::seconds timeout,
             http::request& req, http::client_options& o, http_result& out) {
    auto split = http::split_url(to.url);
    if (!split || split->second != "/") {
        out.error =
            "the URL must look like http://HOST:PORT or https://HOST:PORT, got '" + to.url + "'";
        return false;
    }
    req.origin = split->first;
    req.target = target;
    o.name = "regpin-cli";
    o.connect_timeout = std::chrono::seconds(5);
    o.read_timeout = timeout;
    o.ca_file = to.ca_file;
    o.redirects = http::redirect_policy::none();
    return true;
}

}  // namespace

http_result http_get_stream(const server& to, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            const std::function<void(unsigned, std::string_view)>& on_data,
                            std::chrono::seconds timeout) {
    http_result out;
    http::request req;
    http::client_options o;
    if (!prepare(to, target, timeout, req, o, out)) return out;
    req.headers = headers;
    auto r = http::send_blocking(o, std::move(req), on_data);
    out.status = r.status;
    out.error = std::move(r.error);
    return out;
}

http_result http_call(const server& to, const std::string& method, const std::string& target,
                      const std::string& body, const std::string& token,
                      std::chrono::seconds timeout) {
    http_result out;
    http::request req;
    http::client_options o;
    if (!prepare(to, target, timeout, req, o, out)) return out;
    req.method = boost::beast::http::string_to_verb(method);
    if (!token.empty()) req.header("Authorization", "Bearer " + token);
    if (!body.empty()) {
        req.body = body;
        req.content_type = "application/json";
    }
    auto r = http::send_blocking(o, std::move(req));
    out.status = r.status;
    out.body = std::move(r.body);
    out.error = std::move(r.error);
    return out;
}

}  // namespace regpin::proxy::cli
