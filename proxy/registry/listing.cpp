// Tag lists and referrers: answered by the upstream, shaped by regpin.
#include <algorithm>

#include <boost/url.hpp>
#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include "proxy/oci/media_types.hpp"
#include "proxy/pins/views.hpp"
#include "proxy/registry/replies.hpp"
#include "proxy/registry/service.hpp"
#include "proxy/upstream/fetch.hpp"
#include "storage/clock.hpp"

namespace regpin::proxy::registry {

namespace asio = boost::asio;
using oci::error_code;

namespace {

// What one client's tag list may cost the upstream (and regpin's memory).
constexpr int max_tag_pages = 20;
constexpr std::size_t max_tag_bytes = 16 * 1024 * 1024;

}  // namespace

asio::awaitable<reply> service::tags(const target& t) {
    const auto& registry = t.where.registry;
    std::optional<std::size_t> n;
    if (t.route.n) {
        const auto& s = *t.route.n;
        if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), ::isdigit))
            co_return error_reply(
                {error_code::pagination_number_invalid, "n must be a non-negative integer"});
        n = std::stoul(s);
    }

    // Bounded by what the client asked for: the client's n and last go upstream, pages are
    // followed only until n tags are in hand, and never past max_tag_pages pages or
    // max_tag_bytes bytes in all (without n, a list cut there ends with a Link to the rest).
    std::vector<std::string> tags;
    std::size_t after_last = 0;  // tags past the client's `last`
    bool from_pins = false;
    bool upstream_more = false;
    boost::urls::url first("/v2/" + t.where.repository + "/tags/list");
    if (n && *n > 0) first.params().append({"n", std::to_string(*n)});
    if (t.route.last) first.params().append({"last", *t.route.last});
    std::string next(first.buffer());
    std::size_t budget = max_tag_bytes;
    std::optional<oci::error> failure;
    for (int page = 0; !next.empty(); ++page) {
        if (page > 0 && (page == max_tag_pages || budget == 0 || (n && after_last >= *n))) {
            upstream_more = true;
            break;
        }
        upstream::request req;
        req.target = next;
        req.scope = upstream::pull_scope(t.where.repository);
        next.clear();
        auto resp = co_await t.client->send(req);
        if (!resp) {
            failure = upstream::transport_error(registry, resp.error());
            break;
        }
        auto status = resp->status();
        auto link = std::string(resp->headers()["Link"]);
        auto body = co_await resp->read_all(budget);
        if (status != 200) {
            failure = upstream::upstream_error(registry, status, error_code::name_unknown);
            break;
        }
        if (!body && page > 0 && body.error() == http::errc::body_too_large) {
            upstream_more = true;  // the budget ran out: what was read so far is the answer
            break;
        }
        if (!body) {
            failure = body.error() == http::errc::body_too_large
                          ? oci::error{error_code::unavailable,
                                       "upstream " + registry + " sent a tag list over " +
                                           std::to_string(max_tag_bytes) + " bytes"}
                          : upstream::transport_error(registry, body.error());
            break;
        }
        budget -= body->size();
        auto j = nlohmann::json::parse(*body, nullptr, false);
        if (!j.is_object()) {
            failure = oci::error{error_code::unavailable,
                                 "upstream " + registry + " sent an invalid tag list"};
            break;
        }
        if (j.contains("tags") && j["tags"].is_array())
            for (const auto& tag : j["tags"])
                if (tag.is_string()) {
                    tags.push_back(tag.get<std::string>());
                    if (!t.route.last || tags.back() > *t.route.last) ++after_last;
                }
        // Link: </v2/repo/tags/list?n=100&last=x>; rel="next"
        auto lt = link.find('<'), gt = link.find('>');
        if (lt != std::string::npos && gt != std::string::npos && gt > lt &&
            link.find("rel=\"next\"") != std::string::npos) {
            next = link.substr(lt + 1, gt - lt - 1);
            if (next.rfind("/v2/", 0) != 0) next.clear();  // only same-origin paths
        }
    }
    if (failure) {
        // Offline: the tags regpin has pinned are still an honest (partial) answer.
        auto pinned = co_await pins_.list_repository(registry, t.where.repository);
        if (!pinned || pinned->empty() || failure->code != error_code::unavailable)
            co_return error_reply(*failure);
        for (const auto& p : *pinned) tags.push_back(p.key.tag);
        from_pins = true;
    }
    std::sort(tags.begin(), tags.end());
    tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
    auto begin = tags.begin();
    if (t.route.last) begin = std::upper_bound(tags.begin(), tags.end(), *t.route.last);
    auto end = tags.end();
    bool more = false;
    if (n && static_cast<std::size_t>(end - begin) > *n) {
        end = begin + static_cast<std::ptrdiff_t>(*n);
        more = *n > 0;
    } else if (upstream_more && !from_pins && end != begin) {
        more = true;  // the upstream has more past what regpin read
    }
    nlohmann::json out = {{"name", t.route.name}, {"tags", std::vector<std::string>(begin, end)}};
    reply r;
    r.body = out.dump();
    r.header("Content-Type", "application/json");
    if (more) {
        boost::urls::url link("/v2/" + t.route.name + "/tags/list");
        if (n) link.params().append({"n", std::to_string(*n)});
        link.params().append({"last", *(end - 1)});
        if (t.route.ns) link.params().append({"ns", *t.route.ns});
        r.header("Link", "<" + std::string(link.buffer()) + ">; rel=\"next\"");
    }
    if (from_pins)
        r.header("Warning", "299 - \"upstream unavailable: only pinned tags are listed\"");
    r.log_field("cache", from_pins ? "pin" : "miss");
    co_return r;
}

namespace {

// Whether `doc` is an OCI image index as the referrers API defines it: schemaVersion 2, the index
// media type when it names one, and descriptors with a media type, a valid digest and a size.
bool is_referrers_index(const nlohmann::json& doc) {
    if (!doc.is_object() || !doc.contains("manifests") || !doc["manifests"].is_array())
        return false;
    if (doc.value("schemaVersion", 0) != 2) return false;
    if (doc.contains("mediaType") &&
        (!doc["mediaType"].is_string() || doc["mediaType"].get<std::string>() != oci::oci_index))
        return false;
    for (const auto& d : doc["manifests"]) {
        if (!d.is_object() || !d.contains("mediaType") || !d["mediaType"].is_string() ||
            !d.contains("digest") || !d["digest"].is_string() || !d.contains("size") ||
            !d["size"].is_number_unsigned())
            return false;
        if (!storage::digest::parse(d["digest"].get<std::string>())) return false;
    }
    return true;
}

// The image index `index` with only the descriptors of `artifact_type` (nullopt: unchanged), or
// nullopt when it is not a referrers index (is_referrers_index).
std::optional<std::string> filtered(const std::string& index,
                                    const std::optional<std::string>& artifact_type) {
    auto doc = nlohmann::json::parse(index, nullptr, false);
    if (!is_referrers_index(doc)) return std::nullopt;
    if (!artifact_type) return index;
    auto kept = nlohmann::json::array();
    for (const auto& d : doc["manifests"])
        if (d.is_object() && d.value("artifactType", std::string()) == *artifact_type)
            kept.push_back(d);
    doc["manifests"] = std::move(kept);
    return doc.dump();
}

reply referrers_reply(std::string body, bool filter_applied) {
    reply r;
    r.body = std::move(body);
    r.header("Content-Type", std::string(oci::oci_index));
    if (filter_applied) r.header("OCI-Filters-Applied", "artifactType");
    return r;
}

}  // namespace

asio::awaitable<reply> service::referrers(const target& t, std::string accept) {
    // The whole list is fetched (and kept, for when the upstream is down); an artifactType
    // filter is applied here.
    const auto& registry = t.where.registry;
    const auto& repository = t.where.repository;
    auto subject = storage::digest::parse(t.route.reference);
    upstream::request req;
    req.target = "/v2/" + repository + "/referrers/" + t.route.reference;
    req.accept = accept;
    req.scope = upstream::pull_scope(repository);
    auto resp = co_await t.client->send(req);
    std::optional<oci::error> failure;
    if (!resp) {
        failure = upstream::transport_error(registry, resp.error());
    } else if (auto status = resp->status(); status == 404 && subject) {
        // No referrers API upstream (Distribution 2.x): regpin serves the API itself, from the
        // fallback tag clients would otherwise read by hand.
        (void)co_await resp->read_all(64 * 1024);
        auto index = co_await referrers_from_fallback_tag(t, *subject, failure);
        if (index) {
            auto shaped = filtered(*index, t.route.artifact_type);
            if (!shaped)
                co_return error_reply(
                    {error_code::manifest_invalid,
                     "upstream " + registry + "'s referrers fallback tag is not an image index"});
            storage::referrers_record rec{*index, storage::now_ms()};
            if (!co_await content_.put_referrers(registry, repository, *subject, rec))
                spdlog::warn("could not keep the referrers of {}/{}@{}", registry, repository,
                             subject->str());
            auto r = referrers_reply(std::move(*shaped), t.route.artifact_type.has_value());
            r.log_field("cache", "miss");
            co_return r;
        }
    } else if (status == 404) {
        co_return error_reply({error_code::manifest_unknown,
                               "upstream " + registry + " does not support the referrers API"});
    } else if (status != 200) {
        failure = upstream::upstream_error(registry, status, error_code::manifest_unknown);
    } else {
        auto link = std::string(resp->headers()["Link"]);
        auto body = co_await resp->read_all(settings_.manifest_max_bytes);
        if (!body) {
            failure = upstream::transport_error(registry, body.error());
        } else if (auto shaped = filtered(*body, t.route.artifact_type); !shaped) {
            co_return error_reply({error_code::manifest_invalid,
                                   "upstream " + registry + " answered referrers with no index"});
        } else {
            const bool paged = !link.empty();
            if (subject && !paged) {
                // Kept for when the upstream is down; a failure to keep it is only logged.
                storage::referrers_record rec{*body, storage::now_ms()};
                if (!co_await content_.put_referrers(registry, repository, *subject, rec))
                    spdlog::warn("could not keep the referrers of {}/{}@{}", registry, repository,
                                 subject->str());
            }
            auto r = referrers_reply(std::move(*shaped), t.route.artifact_type.has_value());
            if (paged && link.find("</v2/") != std::string::npos) r.header("Link", link);
            r.log_field("cache", "miss");
            co_return r;
        }
    }
    // The upstream cannot answer: the list as last fetched, marked stale.
    if (subject) {
        auto kept = co_await content_.find_referrers(registry, repository, *subject);
        if (kept && *kept) {
            if (auto shaped = filtered((*kept)->index, t.route.artifact_type)) {
                auto r = referrers_reply(std::move(*shaped), t.route.artifact_type.has_value());
                // RFC 9111 section 5.5: warn-code 110, agent, quoted text.
                auto why = failure->message;
                std::replace(why.begin(), why.end(), '"', '\'');
                r.header("Warning", "110 regpin \"Response is Stale: referrers as fetched at " +
                                        pins::format_time((*kept)->fetched_ms) + "; " + why + "\"");
                r.log_field("cache", "stale");
                co_return r;
            }
        }
    }
    co_return error_reply(*failure);
}

asio::awaitable<std::optional<std::string>> service::referrers_from_fallback_tag(
    const target& t, const storage::digest& subject, std::optional<oci::error>& failure) {
    // The tag is <alg>-<encoded>, the algorithm cut to 32 characters and the encoded value to
    // 64 (a sha512 digest's 128 would pass the tag grammar's 128-character limit).
    auto tag = std::string(subject.algorithm().substr(0, 32)) + "-" +
               std::string(subject.hex().substr(0, 64));
    const bool head_first = false;
    const std::string accept(oci::oci_index);
    auto got = co_await manifests_.by_tag(*t.client, t.where.repository, tag, accept,
                                          settings_.manifest_max_bytes, head_first);
    if (got) {
        if (!oci::is_index_type(got->manifest.media_type)) co_return std::string();
        co_return std::move(got->manifest.bytes);
    }
    if (got.error().code == error_code::manifest_unknown)
        // No fallback tag: nothing refers to the subject (yet).
        co_return std::string(R"({"schemaVersion":2,"mediaType":")") + std::string(oci::oci_index) +
            R"(","manifests":[]})";
    failure = got.error();
    co_return std::nullopt;
}

}  // namespace regpin::proxy::registry
