// Writes pins straight into a stopped regpin's data folder, for the scale workload of
// bench/run.py: tags `<prefix><first>` .. `<prefix><first+count-1>` of one repository, all
// pinned to one manifest digest that regpin already has cached. Goes through the same pin
// store regpin uses (its apply(): pins, first-sight events, counters), 1,000 first sights to
// a synced write batch, so a million pins seed in about a minute. With --etcd URL
// (and --etcd-prefix, default /regpin/) the pins go to etcd instead, through regpin's etcd pin
// store, 40 to a transaction (etcd's default limit is 128 operations per transaction).
//
//   regpin_seed_pins --data DIR --registry 127.0.0.1:5000 --repository bench/scale
//       --prefix t --first 1 --count 99999 --digest sha256:... --media-type TYPE --size N
//       --accept 'application/vnd.oci.image.manifest.v1+json, */*'

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "proxy/etcd/pin_store.hpp"
#include "proxy/oci/media_types.hpp"
#include "storage/clock.hpp"
#include "storage/database.hpp"
#include "storage/digest.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace {

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr, "seed_pins: %s\n(see the comment at the top of bench/seed_pins.cpp)\n",
                 why.c_str());
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    using namespace regpin;
    std::string data, registry, repository, prefix = "t", digest_text, media_type, accept, etcd,
                                            etcd_prefix = "/regpin/";
    std::uint64_t first = 0, count = 0, size = 0;
    const std::map<std::string, std::string*> texts = {
        {"--data", &data},     {"--registry", &registry},  {"--repository", &repository},
        {"--prefix", &prefix}, {"--digest", &digest_text}, {"--media-type", &media_type},
        {"--accept", &accept}, {"--etcd", &etcd},          {"--etcd-prefix", &etcd_prefix}};
    const std::map<std::string, std::uint64_t*> numbers = {
        {"--first", &first}, {"--count", &count}, {"--size", &size}};
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc) usage("missing value for " + a);
        std::string v = argv[++i];
        if (auto t = texts.find(a); t != texts.end()) {
            *t->second = v;
        } else if (auto n = numbers.find(a); n != numbers.end()) {
            auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *n->second);
            if (ec != std::errc{} || end != v.data() + v.size())
                usage(a + " is not a number: " + v);
        } else {
            usage("unknown argument " + a);
        }
    }
    if ((data.empty() && etcd.empty()) || registry.empty() || repository.empty() ||
        media_type.empty())
        usage("--data or --etcd, --registry, --repository and --media-type are required");
    auto d = storage::digest::parse(digest_text);
    if (!d) usage("--digest is not a digest: " + digest_text);

    auto now = storage::now_ms();
    storage::pin p{.key = {}, .manifest_digest = *d};
    p.key.registry = registry;
    p.key.repository = repository;
    p.key.accept_class = proxy::oci::accept_class(accept);
    p.media_type = media_type;
    p.size = size;
    p.first_seen_ms = now;
    p.last_verified_ms = now;
    auto first_sight = [&](std::uint64_t i) {
        p.key.tag = prefix + std::to_string(i);
        storage::pin_event e;
        e.time_ms = now;
        e.key = p.key;
        e.new_digest = p.manifest_digest.str();
        e.actor = "bench-seed";
        return storage::pin_change{p.key, std::nullopt, p, {e}, {}};
    };

    if (!etcd.empty()) {
        proxy::etcd::options o;
        o.endpoints = {etcd};
        o.timeout = std::chrono::seconds(30);
        proxy::etcd::store_options so;
        so.prefix = etcd_prefix;
        so.replica = "bench-seed";
        so.serving = false;
        proxy::etcd::etcd_pin_store pins(o, so);
        if (!pins.wait_loaded(std::chrono::seconds(10))) usage("cannot read etcd at " + etcd);
        std::vector<storage::pin_change> batch;
        for (std::uint64_t i = first; i < first + count; ++i) {
            batch.push_back(first_sight(i));
            if (batch.size() == 40 || i + 1 == first + count) {
                auto r = pins.apply(batch);
                if (!r) usage("writing pins to etcd failed: " + r.error().message());
                batch.clear();
            }
        }
        std::printf("{\"seeded\": %llu}\n", static_cast<unsigned long long>(count));
        return 0;
    }

    storage::open_report report;
    auto db = storage::open_database(data, report);
    if (!db) usage("cannot open " + data + ": " + report.error_detail);
    storage::rocksdb_pin_store pins(*db);
    std::vector<storage::pin_change> batch;
    for (std::uint64_t i = first; i < first + count; ++i) {
        batch.push_back(first_sight(i));
        if (batch.size() == 1000 || i + 1 == first + count) {
            auto r = pins.apply(batch);
            if (!r) usage("writing pins up to " + p.key.tag + " failed: " + r.error().message());
            batch.clear();
        }
    }
    std::printf("{\"seeded\": %llu}\n", static_cast<unsigned long long>(count));
    return 0;
}
