#!/bin/sh
# Installs, from Debian 12's archive, exactly what regpin needs.
#   deploy/debian-deps.sh          build and run regpin (python3: CMake configures the test
#                                  targets, built by default)
#   deploy/debian-deps.sh --test   also what the tests start: docker-registry, containerd, skopeo,
#                                  etcd (etcd-server: a 3-member cluster for replicas), and
#                                  headless Chromium with its driver and Selenium (console tests)
#   deploy/debian-deps.sh --bench  the test packages plus nginx and perf, for bench/run.py
# Idempotent: packages already installed are left alone. Never installs libboost-dev,
# which would remove Boost 1.81 (see ../shared/docs/stack.md).
set -eu

build_pkgs="g++ cmake ninja-build ccache pkg-config
  libboost1.81-dev libboost-system1.81-dev libboost-url1.81-dev libboost-json1.81-dev
  libssl-dev librocksdb-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libbenchmark-dev libcli11-dev libyaml-dev ca-certificates python3"
test_pkgs="clang-14 libclang-rt-14-dev docker-registry containerd skopeo curl openssl apache2-utils prometheus python3-yaml
  etcd-server etcd-client chromium chromium-driver python3-selenium python3-jsonpatch"

bench_pkgs="nginx-light linux-perf"

pkgs="$build_pkgs"
case "${1:-}" in
    --test) pkgs="$pkgs $test_pkgs" ;;
    --bench) pkgs="$pkgs $test_pkgs $bench_pkgs" ;;
    "") ;;
    *) echo "usage: $0 [--test|--bench]" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing
else
    echo "all dependencies present${1:+ ($1)}"
fi
