#pragma once
// One real etcd server (Debian's etcd-server) for the tests of this binary: started on first
// use on free loopback ports in a temporary data folder, stopped at exit. Tests share it and
// keep apart by key prefix.

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "proxy/etcd/client.hpp"
#include "tests/unit/temp_dir.hpp"

extern char** environ;

namespace regpin::testing {

// A port nothing listens on now (bound to 0 and released).
inline int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        throw std::runtime_error("cannot bind a loopback socket");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

class etcd_process {
public:
    static etcd_process& shared() {
        static etcd_process p;
        return p;
    }
    const std::string& endpoint() const { return endpoint_; }

    ~etcd_process() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
    }

private:
    etcd_process() {
        const char* bin = std::getenv("REGPIN_ETCD_BIN");
        std::string etcd = bin ? bin : "/usr/bin/etcd";
        if (::access(etcd.c_str(), X_OK) != 0)
            throw std::runtime_error(etcd +
                                     " is missing: install etcd-server "
                                     "(deploy/debian-deps.sh --test)");
        auto client = free_port(), peer = free_port();
        endpoint_ = "http://127.0.0.1:" + std::to_string(client);
        auto peer_url = "http://127.0.0.1:" + std::to_string(peer);
        std::vector<std::string> args{etcd,
                                      "--name=unit",
                                      "--data-dir=" + (dir_.path() / "etcd").string(),
                                      "--listen-client-urls=" + endpoint_,
                                      "--advertise-client-urls=" + endpoint_,
                                      "--listen-peer-urls=" + peer_url,
                                      "--initial-advertise-peer-urls=" + peer_url,
                                      "--initial-cluster=unit=" + peer_url,
                                      "--log-outputs=" + (dir_.path() / "etcd.log").string(),
                                      "--logger=zap"};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        // Its own chatter (gRPC warnings at shutdown) goes to its log, not the test's output.
        auto log = (dir_.path() / "etcd.out").string();
        posix_spawn_file_actions_t files;
        posix_spawn_file_actions_init(&files);
        posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                         0600);
        posix_spawn_file_actions_adddup2(&files, 1, 2);
        auto spawned = ::posix_spawn(&pid_, etcd.c_str(), &files, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&files);
        if (spawned != 0) throw std::runtime_error("cannot start " + etcd);
        proxy::etcd::client c(
            {.endpoints = {endpoint_}, .timeout = std::chrono::milliseconds(500)});
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (std::chrono::steady_clock::now() < until) {
            if (c.call_blocking("/v3/kv/range", proxy::etcd::range_request("ready"))) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        throw std::runtime_error("etcd did not answer within 30 s; log in " +
                                 (dir_.path() / "etcd.log").string());
    }

    temp_dir dir_;
    pid_t pid_ = -1;
    std::string endpoint_;
};

}  // namespace regpin::testing
