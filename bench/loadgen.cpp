// A bounded HTTP/1.1 load generator for regpin's benchmarks and soak test: keep-alive
// connections on loopback, a weighted mix of requests (GET and HEAD: wrk cannot send HEAD),
// every body read to the end and counted. Stops after --duration seconds or --requests
// requests, whichever comes first, and prints one JSON object of results.
//
//   loadgen --target 127.0.0.1:5000 --connections 64 --duration 10 \
//           --request 'HEAD /v2/library/app/manifests/v1?ns=docker.io' --weight 3 \
//           --request 'GET /v2/library/app/blobs/sha256:...' --header 'Accept: */*'

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct request_spec {
    http::verb method = http::verb::get;
    std::string target;
    int weight = 1;
};

struct options {
    std::string host = "127.0.0.1";
    std::string port = "5000";
    int connections = 16;
    double duration = 10;
    std::uint64_t max_requests = 0;  // 0: no bound but the duration
    std::vector<request_spec> requests;
    std::vector<std::pair<std::string, std::string>> headers;
    int threads = 1;
};

struct stats {
    std::mutex mutex;
    std::vector<double> latencies_us;  // sampled
    std::atomic<std::uint64_t> done{0}, errors{0}, bytes{0}, non_2xx{0};
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr, "loadgen: %s\n(see the comment at the top of bench/loadgen.cpp)\n", why);
    std::exit(2);
}

asio::awaitable<void> worker(const options& o, stats& s, clock_type::time_point end,
                             std::atomic<std::uint64_t>& issued, unsigned seed) {
    std::mt19937 rng(seed);
    int total_weight = 0;
    for (const auto& r : o.requests) total_weight += r.weight;
    auto ex = co_await asio::this_coro::executor;
    tcp::resolver resolver(ex);
    auto [rec, eps] = co_await resolver.async_resolve(o.host, o.port, use_tuple);
    if (rec) {
        ++s.errors;
        co_return;
    }
    std::vector<char> sink(1024 * 1024);
    std::uint64_t sample = 0;
    while (clock_type::now() < end) {
        beast::tcp_stream stream(ex);
        stream.expires_after(std::chrono::seconds(30));
        auto [cec, ep] = co_await stream.async_connect(eps, use_tuple);
        if (cec) {
            ++s.errors;
            continue;
        }
        beast::flat_buffer buffer;
        while (clock_type::now() < end) {
            if (o.max_requests && issued.fetch_add(1) >= o.max_requests) co_return;
            int pick = std::uniform_int_distribution<int>(0, total_weight - 1)(rng);
            const request_spec* spec = &o.requests.front();
            for (const auto& r : o.requests) {
                if (pick < r.weight) {
                    spec = &r;
                    break;
                }
                pick -= r.weight;
            }
            http::request<http::empty_body> req{spec->method, spec->target, 11};
            req.set(http::field::host, o.host + ":" + o.port);
            for (const auto& [k, v] : o.headers) req.set(k, v);
            auto started = clock_type::now();
            stream.expires_after(std::chrono::seconds(60));
            auto [wec, wn] = co_await http::async_write(stream, req, use_tuple);
            if (wec) {
                ++s.errors;
                break;
            }
            http::response_parser<http::buffer_body> parser;
            parser.body_limit(boost::none);
            if (spec->method == http::verb::head) parser.skip(true);
            auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
            if (hec) {
                ++s.errors;
                break;
            }
            bool failed = false;
            auto length = parser.content_length();
            if (!parser.is_done() && length && !parser.chunked()) {
                // A sized body: read it straight off the socket (the parser would copy every
                // byte once more and cap each read, which made the load generator the limit).
                std::uint64_t left = *length;
                auto buffered = std::min<std::uint64_t>(buffer.size(), left);
                buffer.consume(buffered);
                left -= buffered;
                s.bytes += buffered;
                while (left > 0) {
                    auto want = std::min<std::uint64_t>(left, sink.size());
                    auto [rec, rn] = co_await stream.async_read_some(
                        asio::buffer(sink.data(), static_cast<std::size_t>(want)), use_tuple);
                    if (rec) {
                        failed = true;
                        break;
                    }
                    left -= rn;
                    s.bytes += rn;
                }
            } else {
                while (!parser.is_done()) {
                    parser.get().body().data = sink.data();
                    parser.get().body().size = sink.size();
                    auto [bec, bn] = co_await http::async_read(stream, buffer, parser, use_tuple);
                    if (bec == http::error::need_buffer) bec = {};
                    if (bec) {
                        failed = true;
                        break;
                    }
                    s.bytes += sink.size() - parser.get().body().size;
                }
            }
            if (failed) {
                ++s.errors;
                break;
            }
            auto us =
                std::chrono::duration<double, std::micro>(clock_type::now() - started).count();
            ++s.done;
            auto status = parser.get().result_int();
            if (status < 200 || status > 299) ++s.non_2xx;
            if ((sample++ & 3) == 0) {  // every 4th latency: bounded memory on long runs
                std::lock_guard lock(s.mutex);
                if (s.latencies_us.size() < 4'000'000) s.latencies_us.push_back(us);
            }
            if (!parser.keep_alive()) break;
        }
    }
}

double percentile(std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    auto k = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
}

}  // namespace

int main(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(("missing value for " + a).c_str());
            return argv[++i];
        };
        if (a == "--target") {
            auto t = value();
            auto colon = t.rfind(':');
            if (colon == std::string::npos) usage("--target is HOST:PORT");
            o.host = t.substr(0, colon);
            o.port = t.substr(colon + 1);
        } else if (a == "--connections") {
            o.connections = std::max(1, std::atoi(value().c_str()));
        } else if (a == "--duration") {
            o.duration = std::atof(value().c_str());
        } else if (a == "--requests") {
            o.max_requests = std::strtoull(value().c_str(), nullptr, 10);
        } else if (a == "--threads") {
            o.threads = std::max(1, std::atoi(value().c_str()));
        } else if (a == "--request") {
            auto r = value();
            auto sp = r.find(' ');
            if (sp == std::string::npos) usage("--request is 'METHOD /path'");
            request_spec spec;
            spec.method = http::string_to_verb(r.substr(0, sp));
            if (spec.method != http::verb::get && spec.method != http::verb::head)
                usage("only GET and HEAD");
            spec.target = r.substr(sp + 1);
            o.requests.push_back(spec);
        } else if (a == "--weight") {
            if (o.requests.empty()) usage("--weight follows a --request");
            o.requests.back().weight = std::max(1, std::atoi(value().c_str()));
        } else if (a == "--header") {
            auto h = value();
            auto colon = h.find(':');
            if (colon == std::string::npos) usage("--header is 'Name: value'");
            auto v = h.substr(colon + 1);
            while (!v.empty() && v.front() == ' ') v.erase(0, 1);
            o.headers.emplace_back(h.substr(0, colon), v);
        } else {
            usage(("unknown argument " + a).c_str());
        }
    }
    if (o.requests.empty()) usage("at least one --request");
    if (o.duration <= 0 || o.duration > 24 * 3600)
        usage("--duration must be in (0, 86400] seconds");

    stats s;
    std::atomic<std::uint64_t> issued{0};
    asio::io_context ioc(o.threads);
    auto start = clock_type::now();
    auto end = start + std::chrono::duration_cast<clock_type::duration>(
                           std::chrono::duration<double>(o.duration));
    for (int c = 0; c < o.connections; ++c)
        asio::co_spawn(ioc, worker(o, s, end, issued, 1234u + static_cast<unsigned>(c)),
                       asio::detached);
    std::vector<std::thread> pool;
    for (int t = 1; t < o.threads; ++t) pool.emplace_back([&] { ioc.run(); });
    ioc.run();
    for (auto& t : pool) t.join();
    double secs = std::chrono::duration<double>(clock_type::now() - start).count();
    auto& lat = s.latencies_us;
    std::printf(
        "{\"requests\": %llu, \"errors\": %llu, \"non_2xx\": %llu, \"bytes\": %llu, \"seconds\": "
        "%.3f, "
        "\"requests_per_second\": %.1f, \"bytes_per_second\": %.1f, \"latency_us\": {\"p50\": "
        "%.1f, "
        "\"p90\": %.1f, \"p99\": %.1f, \"max\": %.1f}}\n",
        static_cast<unsigned long long>(s.done.load()),
        static_cast<unsigned long long>(s.errors.load()),
        static_cast<unsigned long long>(s.non_2xx.load()),
        static_cast<unsigned long long>(s.bytes.load()), secs, s.done.load() / secs,
        s.bytes.load() / secs, percentile(lat, 50), percentile(lat, 90), percentile(lat, 99),
        lat.empty() ? 0.0 : *std::max_element(lat.begin(), lat.end()));
    return s.errors.load() == 0 ? 0 : 1;
}
