// regpin: a caching container-registry proxy that serves pinned content.

#include <malloc.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

#include <spdlog/fmt/ranges.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "config/config.hpp"
#include "proxy/app.hpp"
#include "proxy/cli/args.hpp"
#include "proxy/cli/bundle_commands.hpp"
#include "proxy/cli/commands.hpp"
#include "proxy/cli/node_config.hpp"
#include "storage/database.hpp"
#include "storage/threads.hpp"

namespace {

constexpr const char* usage_main =
    R"(regpin - a caching container-registry proxy that serves pinned content

Usage:
  regpin serve [options]     run the proxy (see 'regpin serve --help')
  regpin pins COMMAND ...    list, show, approve, unpin, set or check pins of a running regpin
                             (see 'regpin pins --help')
  regpin events [options]    list pin events, or follow them (see 'regpin events --help')
  regpin cache [options]     the cache on disk: size, limit, protected and evictable, evictions (alias: du)
  regpin audit [options]     who pulled which image digest: nodes, tags, times (see --help)
  regpin backup DIR          a consistent copy of a running regpin's data folder (restore: start on it)
  regpin verify [--data DIR] re-hash stored blobs and manifests, quarantine what does not match
  regpin resolve [FILE...]   pin the images of Kubernetes YAML: image: app:v1 -> app:v1@sha256:...,
                             a lock file, drift checks for CI (see 'regpin resolve --help')
  regpin prefetch IMAGE...   pull images through a running regpin: cache and pin them
  regpin export ...          write pinned images and their pins to a bundle (OCI layout tar)
  regpin import BUNDLE.tar   load a bundle into a data folder (air-gapped sites)
  regpin hosts-toml ...      write node configuration (containerd hosts.toml, CRI-O, k3s,
                             Docker) that sends pulls through regpin (see 'regpin hosts-toml --help')
  regpin --help              this text
  regpin --version           print the version

Nodes point containerd's registry mirror (hosts.toml) at regpin; it pulls from the
configured upstream registries, caches manifests and blobs (digest-verified, in RocksDB),
and pins every tag to the first digest it sees.
)";

struct serve_options {
    std::string config_file;
    std::string listen, data, log_level, admin_listen, admin_token_file, etcd;
    std::string admission_listen, admission_tls, admission_unpinned;
    std::vector<std::string> upstreams;
    bool check_only = false;
    bool offline = false;
};

// Reads serve's command line; the exit status when the command should not run.
std::optional<int> parse_serve(int argc, char** argv, serve_options& o) {
    CLI::App app{
        "Runs the pull-through registry. Without --config, regpin uses its defaults: "
        "listen on 127.0.0.1:5000, data in ./regpin-data, upstreams docker.io, "
        "ghcr.io, quay.io and registry.k8s.io (docker.io is the default for requests "
        "without ns or a path prefix). Flags override the config file.",
        "regpin serve"};
    app.add_option("--config", o.config_file, "JSON config (every key: config/README.md)");
    app.add_option("--listen", o.listen, "HOST:PORT of the registry API (default 127.0.0.1:5000)");
    app.add_option("--data", o.data, "data folder, the RocksDB database (default ./regpin-data)");
    app.add_option("--upstream", o.upstreams,
                   "REGISTRY=URL, e.g. docker.io=https://registry-1.docker.io; repeatable; "
                   "replaces the configured list; the first one is the default upstream")
        ->allow_extra_args(false);
    app.add_option("--admin-listen", o.admin_listen,
                   "HOST:PORT of the admin API (default 127.0.0.1:5001)");
    app.add_option("--admin-token-file", o.admin_token_file,
                   "an admin API token (named \"admin\" in pin histories); more tokens in the "
                   "config's admin.tokens");
    app.add_option("--admission-listen", o.admission_listen,
                   "HOST:PORT of the Kubernetes admission webhook (POST /mutate; off by default)");
    app.add_option("--admission-tls", o.admission_tls,
                   "a folder with the webhook's tls.crt and tls.key (a kubernetes.io/tls "
                   "Secret, mounted)");
    app.add_option("--admission-unpinned", o.admission_unpinned,
                   "an image the webhook cannot pin: warn (admit it unchanged, default) or deny")
        ->check(CLI::IsMember({"warn", "deny"}));
    app.add_option("--log-level", o.log_level, "log level (default info)")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
    app.add_option("--etcd", o.etcd,
                   "URL[,URL...]: keep pins on this etcd cluster, shared with every replica "
                   "that names it (pin_store.backend etcd; blobs stay in --data)");
    app.add_flag("--offline", o.offline,
                 "never contact an upstream: serve what is cached, pinned or imported");
    app.add_flag("--check-config", o.check_only, "validate the configuration, print it, and exit");
    return regpin::proxy::cli::parse(app, argc, argv);
}

regpin::config::settings build_settings(const serve_options& o) {
    using namespace regpin::config;
    settings s;
    if (!o.config_file.empty()) {
        s = load_file(o.config_file);
    } else {
        s.upstreams = default_upstreams();
    }
    if (!o.listen.empty()) s.listen = o.listen;
    if (!o.data.empty()) s.data_dir = o.data;
    if (!o.log_level.empty()) s.log_level = o.log_level;
    if (!o.admin_listen.empty()) s.admin.listen = o.admin_listen;
    if (!o.admission_listen.empty()) s.admission.listen = o.admission_listen;
    if (!o.admission_unpinned.empty()) s.admission.unpinned = o.admission_unpinned;
    if (!o.admission_tls.empty()) {
        s.admission.tls = {o.admission_tls + "/tls.crt", o.admission_tls + "/tls.key"};
        for (const auto& f : {s.admission.tls.cert_file, s.admission.tls.key_file})
            if (!std::ifstream(f))
                throw config_error("--admission-tls", "cannot read file '" + f + "'");
    }
    if (o.offline) s.offline = true;
    if (!o.etcd.empty()) {
        s.pin_store.backend = "etcd";
        s.pin_store.endpoints = parse_etcd_flag(o.etcd);
    }
    if (!o.admin_token_file.empty())
        s.admin.tokens.push_back(read_token_file("admin", o.admin_token_file));
    if (!o.upstreams.empty()) {
        s.upstreams.clear();
        s.default_upstream.clear();
        for (const auto& f : o.upstreams) s.upstreams.push_back(parse_upstream_flag(f));
    }
    validate(s);
    return s;
}

int serve(int argc, char** argv) {
    serve_options opts;
    if (auto exit = parse_serve(argc, argv, opts)) return *exit;
    regpin::config::settings settings;
    try {
        settings = build_settings(opts);
    } catch (const regpin::config::config_error& e) {
        std::fprintf(stderr, "regpin: invalid configuration: %s\n", e.what());
        return 2;
    }
    std::string cache_summary;
    if (auto error = regpin::proxy::check_cache_limits(settings, cache_summary); !error.empty()) {
        std::fprintf(stderr, "regpin: invalid configuration: %s\n", error.c_str());
        return 2;
    }
    if (opts.check_only) {
        std::printf("%s\n", cache_summary.c_str());
        std::printf("configuration ok: listen %s, data %s, %zu upstream(s), default %s, pins %s\n",
                    settings.listen.c_str(), settings.data_dir.c_str(), settings.upstreams.size(),
                    settings.default_upstream.c_str(),
                    settings.pin_store.backend == "etcd"
                        ? ("on etcd " + settings.pin_store.endpoints.front() + " under " +
                           settings.pin_store.prefix)
                              .c_str()
                        : "embedded");
        return 0;
    }
    spdlog::set_default_logger(spdlog::stderr_color_mt("regpin"));
    spdlog::set_level(spdlog::level::from_str(settings.log_level));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
    regpin::proxy::use_log_format(settings);
    spdlog::info("{}", cache_summary);

    // RocksDB's blob reads allocate one buffer per chunk; below this threshold glibc serves
    // them from the heap instead of an mmap/munmap pair each time (stack.md: 2x read speed).
    // Freed memory above 16 MiB at a heap's top goes back to the system, and two arenas keep
    // the threads from each holding their own high-water mark (bench/RESULTS.md, peak RSS).
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
    mallopt(M_ARENA_MAX, 2);

    regpin::storage::open_report report;
    auto db = regpin::storage::open_database(settings.data_dir, report);
    if (!db) {
        if (db.error() == regpin::storage::errc::locked)
            spdlog::critical("data folder {} is in use by another regpin process ({})",
                             settings.data_dir, report.error_detail);
        else
            spdlog::critical("cannot open data folder {}: {}", settings.data_dir,
                             report.error_detail);
        return 1;
    }
    spdlog::info("regpin {} starting; data in {}", REGPIN_VERSION, report.path);
    if (settings.offline)
        spdlog::info(
            "offline mode: no upstream is ever contacted; serving the cache, pins and "
            "imported bundles only");
    if (!report.locate_verified)
        spdlog::warn("blobs are served from memory, not with sendfile: {}", report.locate_detail);
    if (report.incomplete_blobs_removed > 0)
        spdlog::info("removed {} incomplete blob download(s) left by an earlier stop",
                     report.incomplete_blobs_removed);
    for (const auto& u : settings.upstreams)
        spdlog::info("upstream {} -> {}{}{}", u.registry, fmt::join(u.urls, ", then "),
                     u.registry == settings.default_upstream ? " (default)" : "",
                     u.username.empty() ? "" : " (with credentials)");

    int threads = settings.threads > 0
                      ? settings.threads
                      : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
    boost::asio::io_context ioc(threads);
    regpin::proxy::app app(ioc, settings);
    try {
        app.start(*db);
    } catch (const std::system_error& e) {
        spdlog::critical("{}: {}", e.what(), e.code().message());
        return 1;
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return 1;
    }

    // SIGTERM (or SIGINT): drain, then stop when the pulls in progress are done or the grace
    // period ran out; a second signal stops at once.
    boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
    boost::asio::steady_timer drained(ioc);
    const auto grace = settings.shutdown_grace;
    auto deadline = std::chrono::steady_clock::time_point::max();
    std::function<void()> wait_drained = [&] {
        if (app.in_flight() == 0 || std::chrono::steady_clock::now() >= deadline) {
            if (app.in_flight() > 0)
                spdlog::warn("shutdown_grace_s ({} s) ran out: cutting {} connection(s)",
                             grace.count(), app.in_flight());
            spdlog::info("stopping");
            signals.cancel();
            app.stop();
            ioc.stop();
            return;
        }
        drained.expires_after(std::chrono::milliseconds(50));
        drained.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) wait_drained();
        });
    };
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        spdlog::info("signal {}: draining: {} connection(s) open, up to {} s for them to finish",
                     sig, app.in_flight(), grace.count());
        deadline = std::chrono::steady_clock::now() + grace;
        app.drain();
        signals.async_wait([&](const boost::system::error_code& ec2, int sig2) {
            if (ec2) return;
            spdlog::info("signal {} again: stopping now", sig2);
            deadline = std::chrono::steady_clock::now();
        });
        wait_drained();
    });

    // These threads run the network event loop: storage calls that may block are checked
    // against them (storage/threads.hpp).
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i)
        pool.emplace_back([&] {
            regpin::storage::mark_network_thread();
            ioc.run();
        });
    regpin::storage::mark_network_thread();
    ioc.run();
    for (auto& t : pool) t.join();
    spdlog::info("stopped");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        std::fputs(usage_main, stderr);
        return 2;
    }
    std::string cmd = argv[1];
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
        std::fputs(usage_main, stdout);
        return 0;
    }
    if (cmd == "--version" || cmd == "version") {
        std::printf("regpin %s\n", REGPIN_VERSION);
        return 0;
    }
    if (cmd == "serve") return serve(argc - 2, argv + 2);
    // The other commands are clients: what the libraries log (a TLS failure's reason) goes to
    // stderr, never into output a script parses.
    spdlog::set_default_logger(spdlog::stderr_color_mt("regpin"));
    spdlog::set_pattern("regpin: %v");
    spdlog::set_level(spdlog::level::warn);
    if (cmd == "pins") return regpin::proxy::cli::pins_command(argc - 2, argv + 2);
    if (cmd == "events") return regpin::proxy::cli::events_command(argc - 2, argv + 2);
    if (cmd == "cache" || cmd == "du") return regpin::proxy::cli::cache_command(argc - 2, argv + 2);
    if (cmd == "audit") return regpin::proxy::cli::audit_command(argc - 2, argv + 2);
    if (cmd == "backup") return regpin::proxy::cli::backup_command(argc - 2, argv + 2);
    if (cmd == "verify") return regpin::proxy::cli::verify_command(argc - 2, argv + 2);
    if (cmd == "resolve") return regpin::proxy::cli::resolve_command(argc - 2, argv + 2);
    if (cmd == "hosts-toml") return regpin::proxy::cli::hosts_toml_command(argc - 2, argv + 2);
    if (cmd == "prefetch") return regpin::proxy::cli::prefetch_command(argc - 2, argv + 2);
    if (cmd == "export") return regpin::proxy::cli::export_command(argc - 2, argv + 2);
    if (cmd == "import") return regpin::proxy::cli::import_command(argc - 2, argv + 2);
    std::fprintf(stderr, "regpin: unknown command '%s'\n\n%s", cmd.c_str(), usage_main);
    return 2;
}
