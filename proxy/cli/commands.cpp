#include "proxy/cli/commands.hpp"

#include "proxy/cli/migrate.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/cli/admin_client.hpp"
#include "proxy/cli/args.hpp"
#include "proxy/cli/http_call.hpp"
#include "proxy/oci/reference.hpp"

#include "storage/database.hpp"

#include "storage/verify.hpp"

namespace regpin::proxy::cli {

namespace {

using nlohmann::json;

std::string short_digest(const json& v) {
    if (!v.is_string()) return "-";
    auto s = v.get<std::string>();
    auto colon = s.find(':');
    return colon == std::string::npos ? s : s.substr(0, colon + 13);
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> width;
    for (const auto& r : rows)
        for (std::size_t i = 0; i < r.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], r[i].size());
        }
    for (const auto& r : rows) {
        std::string line;
        for (std::size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
        }
        std::puts(line.c_str());
    }
}

void print_pins(const json& pins) {
    std::vector<std::vector<std::string>> rows = {
        {"REFERENCE", "STATE", "DIGEST", "PENDING", "FIRST SEEN", "LAST VERIFIED"}};
    for (const auto& p : pins)
        rows.push_back({p.value("reference", ""), p.value("state", ""), short_digest(p["digest"]),
                        short_digest(p["pending_digest"]), p.value("first_seen", ""),
                        p.value("last_verified", "")});
    print_table(rows);
}

// "content of class 15 (sha256:abcd...): missing, pin_content manifests: 3/3 manifests, 2/2
// configs, 4/8 layers", then one line per missing item (the first 20).
void print_content_of(const std::string& what, const json& c) {
    if (!c.is_object()) return;
    auto count = [&](const char* k) {
        return std::to_string(c[k].value("cached", 0)) + "/" +
               std::to_string(c[k].value("total", 0)) + " " + k;
    };
    std::printf("%s: %s (pin_content %s): %s, %s, %s cached\n", what.c_str(),
                c.value("state", "").c_str(), c.value("pin_content", "").c_str(),
                count("manifests").c_str(), count("configs").c_str(), count("layers").c_str());
    for (const auto& m : c["missing"]) {
        std::string platform = m["platform"].is_string() ? m["platform"].get<std::string>() : "";
        std::printf(
            "  missing %s %s%s: %s\n", m.value("kind", "").c_str(), m.value("digest", "").c_str(),
            platform.empty() ? "" : (" (" + platform + ")").c_str(), m.value("reason", "").c_str());
    }
    auto more = c.value("missing_count", 0) - static_cast<int>(c["missing"].size());
    if (more > 0) std::printf("  ... and %d more\n", more);
}

void print_content(const json& pins) {
    for (const auto& p : pins) {
        auto cls = std::to_string(p.value("accept_class", 0));
        print_content_of("content of class " + cls + " " + short_digest(p["digest"]), p["content"]);
        if (p.contains("pending_content"))
            print_content_of(
                "pending content of class " + cls + " " + short_digest(p["pending_digest"]),
                p["pending_content"]);
    }
}

std::string summary_text(const json& e) {
    if (e.contains("summary") && e["summary"].is_object() && e["summary"].contains("text") &&
        e["summary"]["text"].is_string())
        return e["summary"]["text"].get<std::string>();
    return "";
}

void print_events(const json& events) {
    std::vector<std::vector<std::string>> rows = {
        {"ID", "TIME", "EVENT", "REFERENCE", "OLD", "NEW", "BY", "SUMMARY"}};
    for (const auto& e : events) {
        std::string what = e.value("type", "");
        if (e["action"].is_string()) what += " (" + e["action"].get<std::string>() + ")";
        rows.push_back({std::to_string(e.value("id", 0)), e.value("time", ""), what,
                        e.value("reference", ""), short_digest(e["old_digest"]),
                        short_digest(e["new_digest"]), e.value("actor", ""), summary_text(e)});
    }
    print_table(rows);
}

}  // namespace

int pins_command(int argc, char** argv) {
    // On a data folder, not through the admin API: its own options.
    if (argc >= 1 && std::string_view(argv[0]) == "migrate")
        return migrate_command(argc - 1, argv + 1);
    CLI::App app{
        "Lists, shows and decides about the pins of a running regpin, through its admin "
        "API. REF is REGISTRY/REPOSITORY:TAG, e.g. docker.io/library/nginx:1.27 (a "
        "name without a registry host means docker.io). 'regpin pins migrate --help': copy "
        "a data folder's pins into etcd.",
        "regpin pins"};
    app.require_subcommand(1);
    common c;
    std::string registry, repository_prefix, state, ref_text, digest;
    auto* list = app.add_subcommand("list", "list pins");
    list->add_option("--registry", registry, "only this registry");
    list->add_option("--repository-prefix", repository_prefix,
                     "only repositories starting so (needs --registry)");
    list->add_option("--state", state, "only pins in this state")
        ->check(CLI::IsMember({"pinned", "pending", "rejected"}));
    auto* show = app.add_subcommand("show", "one tag's pins and history");
    auto* approve =
        app.add_subcommand("approve", "move the pin to its pending digest, or to --digest");
    auto* unpin = app.add_subcommand("unpin", "forget the pin; the next pull pins afresh");
    auto* set = app.add_subcommand("set", "pin the tag to --digest by hand (fetched, verified)");
    auto* check = app.add_subcommand("check", "compare the pin with the upstream now");
    for (auto* sub : {show, approve, unpin, set, check})
        sub->add_option("REF", ref_text, "REGISTRY/REPOSITORY:TAG")->required();
    approve->add_option("--digest", digest, "the digest to approve (default: the pending one)");
    set->add_option("--digest", digest, "the digest to pin")->required();
    for (auto* sub : {list, show, approve, unpin, set, check})
        add_common(*sub, c, "print the API's JSON instead of a table");
    if (auto exit = parse(app, argc, argv)) return *exit;
    read_token(c);

    if (list->parsed()) {
        if (!repository_prefix.empty() && registry.empty())
            return usage_error(*list, "--repository-prefix needs --registry");
        std::string q = "/api/v1/pins?limit=100000";
        if (!registry.empty()) q += "&registry=" + query_escape(registry);
        if (!repository_prefix.empty())
            q += "&repository_prefix=" + query_escape(repository_prefix);
        if (!state.empty()) q += "&state=" + query_escape(state);
        auto j = call(c, "GET", q);
        if (c.as_json)
            std::puts(j.dump(2).c_str());
        else
            print_pins(j["pins"]);
        return 0;
    }
    auto* chosen = app.get_subcommands().front();
    auto parsed = oci::parse_image_reference(ref_text);
    if (!parsed) return usage_error(*chosen, parsed.error().message);
    const auto& ref = *parsed;
    json body = {{"registry", ref.registry}, {"repository", ref.repository}, {"tag", ref.tag}};
    if (show->parsed()) {
        auto j = call(c, "GET",
                      "/api/v1/pin?registry=" + query_escape(ref.registry) + "&repository=" +
                          query_escape(ref.repository) + "&tag=" + query_escape(ref.tag));
        if (c.as_json) {
            std::puts(j.dump(2).c_str());
        } else {
            print_pins(j["pins"]);
            print_content(j["pins"]);
            std::puts("");
            print_events(j["history"]);
        }
        return 0;
    }
    if (check->parsed()) {
        auto j = call(c, "POST", "/api/v1/pin/check", body.dump());
        if (c.as_json) {
            std::puts(j.dump(2).c_str());
            return 0;
        }
        std::vector<std::vector<std::string>> rows = {
            {"ACCEPT CLASS", "OUTCOME", "UPSTREAM", "ERROR"}};
        for (const auto& r : j["results"])
            rows.push_back({std::to_string(r.value("accept_class", 0)), r.value("outcome", ""),
                            short_digest(r["upstream_digest"]), r.value("error", "")});
        print_table(rows);
        return 0;
    }
    // approve, unpin, set
    if (!digest.empty()) body["digest"] = digest;
    auto j = call(c, "POST", "/api/v1/pin/" + chosen->get_name(), body.dump());
    if (c.as_json) {
        std::puts(j.dump(2).c_str());
        return 0;
    }
    print_events(j["events"]);
    if (j.contains("skipped"))
        for (const auto& s : j["skipped"])
            std::printf("left alone: accept class %d: %s\n", s.value("accept_class", 0),
                        s.value("reason", std::string()).c_str());
    return 0;
}

int events_command(int argc, char** argv) {
    CLI::App app{
        "Lists pin events (first pins, re-points, approvals, unpins, pins by hand), "
        "oldest first.",
        "regpin events"};
    common c;
    std::string since;
    std::uint64_t after = 0;
    bool follow = false;
    app.add_option("--since", since,
                   "only events at or after TIME (RFC 3339, e.g. 2026-11-26T00:00:00Z)");
    app.add_option("--after", after, "only events with a larger id");
    app.add_flag("--follow", follow, "keep waiting for new events (Ctrl-C to stop)");
    add_common(app, c, "one JSON object per line");
    if (auto exit = parse(app, argc, argv)) return *exit;
    read_token(c);
    std::string since_q = since.empty() ? "" : "&since=" + query_escape(since);
    bool header_done = false;
    // --follow long-polls; without it, one page. Both bounded per call by the server.
    while (true) {
        std::string q = "/api/v1/events?limit=1000&after=" + std::to_string(after) + since_q +
                        (follow ? "&wait_s=25" : "");
        auto j = call(c, "GET", q);
        auto& events = j["events"];
        if (c.as_json) {
            for (const auto& e : events) std::puts(e.dump().c_str());
        } else if (!events.empty() || !header_done) {
            print_events(events);  // each batch with its header, so columns line up
            header_done = true;
        }
        std::fflush(stdout);
        for (const auto& e : events) after = std::max<std::uint64_t>(after, e.value("id", 0));
        if (!follow) return 0;
    }
}

int cache_command(int argc, char** argv) {
    CLI::App app{
        "Shows what a running regpin's cache holds on disk: the data folder against its limit "
        "(cache.max_bytes, cache.min_free_*), blobs by class (protected: a pin needs them; "
        "evictable), manifests, evictions and the space they gave back.",
        "regpin cache"};
    common c;
    add_common(app, c, "print the API's JSON instead of a table");
    if (auto exit = parse(app, argc, argv)) return *exit;
    read_token(c);
    auto j = call(c, "GET", "/api/v1/cache");
    if (c.as_json) {
        std::puts(j.dump(2).c_str());
        return 0;
    }
    auto size = [](const json& v) {
        auto b = v.is_number() ? v.get<double>() : 0.0;
        char buf[32];
        if (b >= 1024.0 * 1024 * 1024)
            std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
        else
            std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
        return std::string(buf);
    };
    auto n = [](const json& v) {
        return std::to_string(v.is_number() ? v.get<std::uint64_t>() : 0);
    };
    std::vector<std::vector<std::string>> rows = {
        {"WHAT", "VALUE"},
        {"data folder", size(j["data_folder_bytes"])},
        {"limit now", size(j["limit_bytes"])},
        {"file system free",
         size(j["filesystem_free_bytes"]) + " of " + size(j["filesystem_bytes"])},
        {"blobs", n(j["blobs"]) + " (" + size(j["blob_bytes"]) + ")"},
        {"  protected", n(j["protected_blobs"]) + " (" + size(j["protected_bytes"]) + ")"},
        {"  evictable", size(j["evictable_bytes"])},
        {"manifests", n(j["manifests"])},
        {"evicted since start", n(j["evictions"]) + " (" + size(j["evicted_bytes"]) + ")"},
        {"reclaimed since start", size(j["reclaimed_bytes"])},
        {"blob files", n(j["blob_files"]["count"]) + " (" + size(j["blob_files"]["bytes"]) + ")"},
        {"new blobs", j.value("admitting", true) ? "kept" : "served without being kept"}};
    print_table(rows);
    if (j.contains("detail")) std::printf("\n%s\n", j["detail"].get<std::string>().c_str());
    return 0;
}

int audit_command(int argc, char** argv) {
    CLI::App app{
        "Shows who pulled what through a running regpin: one row per (image digest, client), "
        "with the tag last asked for, the first and last pull and how many manifest requests. "
        "A client is the node name it sent (X-Regpin-Node: a claim, not an identity) or its "
        "address. Give --digest, --ref or --node (or several); without any, the most recent "
        "pulls.",
        "regpin audit"};
    common c;
    std::string digest, ref, node, since;
    std::size_t limit = 100;
    app.add_option("--digest", digest, "a manifest digest: which clients pulled it");
    app.add_option("--ref", ref,
                   "REGISTRY/REPOSITORY[:TAG|@DIGEST] (Docker Hub short names too): who pulled "
                   "that repository, tag or digest");
    app.add_option("--node", node, "a node name or client address: what it pulled");
    app.add_option("--since", since, "only pulls at or after this time (RFC 3339)");
    app.add_option("--limit", limit, "rows at most")->capture_default_str();
    add_common(app, c, "print the API's JSON instead of a table");
    if (auto exit = parse(app, argc, argv)) return *exit;
    read_token(c);
    std::string target = "/api/v1/audit?limit=" + std::to_string(limit);
    for (const auto& [k, v] : {std::pair<const char*, const std::string&>{"digest", digest},
                               {"ref", ref},
                               {"node", node},
                               {"since", since}})
        if (!v.empty()) target += std::string("&") + k + "=" + query_escape(v);
    auto j = call(c, "GET", target);
    if (c.as_json) {
        std::puts(j.dump(2).c_str());
        return 0;
    }
    std::vector<std::vector<std::string>> rows = {
        {"CLIENT", "ADDRESS", "IMAGE", "DIGEST", "FIRST PULLED", "LAST PULLED", "COUNT"}};
    for (const auto& r : j["records"]) {
        std::string image = r.value("registry", "") + "/" + r.value("repository", "");
        if (r["tag"].is_string()) image += ":" + r["tag"].get<std::string>();
        rows.push_back({r.value("client", ""), r.value("address", ""), image,
                        short_digest(r["digest"]), r.value("first_pulled", ""),
                        r.value("last_pulled", ""),
                        std::to_string(r.value("count", std::uint64_t{0}))});
    }
    print_table(rows);
    std::printf("\n%zu client(s)\n", j["clients"].size());
    return 0;
}

int backup_command(int argc, char** argv) {
    CLI::App app{
        "Makes a consistent copy of a running regpin's data folder (blobs, manifests, pins, "
        "history, undelivered alerts) in DIR, a new folder on regpin's host, while it serves: "
        "a RocksDB checkpoint, hard links on the same file system, copies elsewhere. Restore: "
        "start a regpin on a copy of DIR (deploy/README.md, \"Backup and restore\"). With pins "
        "on etcd, back up etcd too.",
        "regpin backup"};
    common c;
    std::string dir;
    app.add_option("DIR", dir, "where to write it: an absolute path on regpin's host, not existing")
        ->required();
    add_common(app, c, "print the API's JSON");
    if (auto exit = parse(app, argc, argv)) return *exit;
    read_token(c);
    auto j = call(c, "POST", "/api/v1/backup", json{{"dir", dir}}.dump());
    if (c.as_json) {
        std::puts(j.dump(2).c_str());
        return 0;
    }
    std::printf("backup written to %s: %.1f MiB in %.1f s\n", j.value("dir", dir).c_str(),
                j.value("bytes", 0.0) / (1024.0 * 1024), j.value("seconds", 0.0));
    return 0;
}

namespace {

int print_verify(std::uint64_t blobs, std::uint64_t bytes, std::uint64_t manifests,
                 const std::vector<std::string>& bad_blobs,
                 const std::vector<std::string>& bad_manifests, std::uint64_t skipped,
                 bool quarantine) {
    std::printf("re-hashed %llu blob(s) (%.1f MiB) and %llu manifest(s)\n",
                static_cast<unsigned long long>(blobs), static_cast<double>(bytes) / (1 << 20),
                static_cast<unsigned long long>(manifests));
    for (const auto& d : bad_blobs)
        std::printf("blob %s does not match its digest: %s\n", d.c_str(),
                    quarantine ? "quarantined" : "not quarantined (--report-only)");
    for (const auto& d : bad_manifests)
        std::printf("manifest %s does not match its digest: %s\n", d.c_str(),
                    quarantine ? "quarantined" : "not quarantined (--report-only)");
    if (skipped > 0)
        std::printf("%llu blob(s) skipped (being read or evicted meanwhile)\n",
                    static_cast<unsigned long long>(skipped));
    return bad_blobs.empty() && bad_manifests.empty() ? 0 : 3;
}

}  // namespace

int verify_command(int argc, char** argv) {
    CLI::App app{
        "Re-hashes every stored blob and manifest. Chunks are served without RocksDB's "
        "checksums, so a byte flipped on disk would reach clients; a blob or manifest that no "
        "longer matches its digest is quarantined (removed, so it is fetched again, verified, "
        "when a client asks for it). Through the admin API of a running regpin, or offline "
        "with --data on a folder no regpin runs on. Exit status 0: everything matched; 3: "
        "something did not (listed); 1: an error.",
        "regpin verify"};
    common c;
    std::string data;
    bool report_only = false;
    app.add_option("--data", data, "a data folder no regpin runs on (offline)");
    app.add_flag("--report-only", report_only, "offline: list mismatches, remove nothing");
    add_common(app, c, "print the API's JSON");
    if (auto exit = parse(app, argc, argv)) return *exit;
    if (!data.empty()) {
        storage::open_report opened;
        auto db = storage::open_database(data, opened);
        if (!db) {
            if (db.error() == storage::errc::locked)
                fail("the data folder '" + data +
                     "' is in use by a running regpin: run 'regpin verify' against its admin API");
            fail("cannot open the data folder '" + data + "': " + opened.error_detail);
        }
        storage::verify_options o;
        o.quarantine = !report_only;
        auto r = storage::verify_content(*db, nullptr, o);
        if (!r) fail("verify failed: " + r.error().message());
        return print_verify(r->blobs, r->blob_bytes, r->manifests, r->bad_blobs, r->bad_manifests,
                            r->skipped, o.quarantine);
    }
    if (report_only) return usage_error(app, "--report-only needs --data");
    read_token(c);
    auto before = call(c, "GET", "/api/v1/verify");
    auto walks = before.value("walks", std::uint64_t{0});
    auto started = call(c, "POST", "/api/v1/verify");
    if (!started.value("started", false)) walks = started.value("walks", walks);
    // Wait for the walk under way (this one, or one already running) to finish.
    json s;
    while (true) {
        s = call(c, "GET", "/api/v1/verify");
        if (!s.value("running", false) && s.value("walks", std::uint64_t{0}) > walks) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(250));  // a client polling
    }
    if (c.as_json) {
        std::puts(s.dump(2).c_str());
        return s["last"]["bad_blobs"].empty() && s["last"]["bad_manifests"].empty() ? 0 : 3;
    }
    const auto& last = s["last"];
    return print_verify(last.value("blobs", std::uint64_t{0}),
                        last.value("bytes", std::uint64_t{0}),
                        last.value("manifests", std::uint64_t{0}),
                        last["bad_blobs"].get<std::vector<std::string>>(),
                        last["bad_manifests"].get<std::vector<std::string>>(),
                        last.value("skipped", std::uint64_t{0}), true);
}

}  // namespace regpin::proxy::cli
