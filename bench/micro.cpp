// Micro benchmarks of the hot paths: SHA-256 streaming (ours against raw OpenSSL), route parsing,
// pin lookup, chunk reads, storing a blob. Run: build/bench/regpin_micro --benchmark_min_time=0.5
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "proxy/oci/route.hpp"
#include "storage/blob_store.hpp"
#include "storage/database.hpp"
#include "storage/digest.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace {

std::string random_bytes(std::size_t n) {
    std::string s(n, '\0');
    std::uint64_t x = 88172645463325252ull;
    for (auto& c : s) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        c = static_cast<char>(x);
    }
    return s;
}

void BM_Sha256Hasher(benchmark::State& state) {
    auto data = random_bytes(static_cast<std::size_t>(state.range(0)));
    for (auto _ : state) {
        regpin::storage::hasher h;
        h.update(std::string_view(data));
        benchmark::DoNotOptimize(h.finish());
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Sha256Hasher)->Arg(64 << 10)->Arg(1 << 20);

void BM_Sha256RawOpenSsl(benchmark::State& state) {
    auto data = random_bytes(static_cast<std::size_t>(state.range(0)));
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    for (auto _ : state) {
        EVP_MD_CTX* ctx = EVP_MD_CTX_new();
        EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
        EVP_DigestUpdate(ctx, data.data(), data.size());
        EVP_DigestFinal_ex(ctx, out, &len);
        EVP_MD_CTX_free(ctx);
        benchmark::DoNotOptimize(out);
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Sha256RawOpenSsl)->Arg(64 << 10)->Arg(1 << 20);

void BM_ParseRoute(benchmark::State& state) {
    const std::string target =
        "/v2/library/nginx/manifests/"
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad?ns=docker.io";
    for (auto _ : state) benchmark::DoNotOptimize(regpin::proxy::oci::parse_route(target));
}
BENCHMARK(BM_ParseRoute);

struct scratch {
    std::filesystem::path dir;
    std::shared_ptr<regpin::storage::database> db;
    scratch() {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "regpin-bench-XXXXXX").string();
        dir = ::mkdtemp(tmpl.data());
        regpin::storage::open_report report;
        db = *regpin::storage::open_database(dir.string(), report);
    }
    ~scratch() {
        db.reset();
        std::filesystem::remove_all(dir);
    }
};

void BM_PinLookup(benchmark::State& state) {
    scratch s;
    regpin::storage::rocksdb_pin_store pins(s.db);
    for (int i = 0; i < state.range(0); ++i) {
        regpin::storage::pin p{{"docker.io", "library/app" + std::to_string(i), "v1", 15},
                               regpin::storage::sha256_of(std::to_string(i))};
        regpin::storage::pin_event e;
        e.key = p.key;
        e.actor = "bench";
        (void)pins.create_if_absent(p, e);
    }
    regpin::storage::pin_key key{"docker.io", "library/app" + std::to_string(state.range(0) / 2),
                                 "v1", 15};
    for (auto _ : state) benchmark::DoNotOptimize(pins.find(key));
}
BENCHMARK(BM_PinLookup)->Arg(10)->Arg(10000)->Iterations(20000);

// Reading one 1 MiB chunk of a flushed blob (in a blob file, in the page cache), three ways:
// 0 copied into a string, 1 pinned (RocksDB's own read buffer, what TLS connections send from),
// 2 located only (what a plain connection needs before sendfile sends the bytes).
void BM_ChunkRead(benchmark::State& state) {
    scratch s;
    regpin::storage::blob_store blobs(s.db);
    auto data = random_bytes(16 << 20);
    auto d = regpin::storage::sha256_of(data);
    const std::uint32_t chunk = regpin::storage::blob_store::default_chunk_size;
    using durability = regpin::storage::blob_store::durability;
    (void)blobs.begin(d, chunk);
    for (std::uint64_t i = 0; i * chunk < data.size(); ++i)
        (void)blobs.put_chunk(d, i, std::string_view(data).substr(i * chunk, chunk),
                              durability::unlogged);
    (void)blobs.commit(d, data.size(), durability::unlogged);  // flushed: in a blob file
    std::string copy;
    regpin::storage::chunk pinned;
    std::uint64_t i = 0;
    for (auto _ : state) {
        auto index = i++ % 16;
        if (state.range(0) == 0) {
            (void)blobs.read_chunk(d, index, copy);
            benchmark::DoNotOptimize(copy.data());
        } else if (state.range(0) == 1) {
            (void)blobs.read_chunk(d, index, pinned);
            benchmark::DoNotOptimize(pinned.bytes().data());
        } else {
            auto span = blobs.locate_chunk(d, index, pinned);
            benchmark::DoNotOptimize(span);
        }
    }
    state.SetBytesProcessed(state.iterations() * chunk);
}
BENCHMARK(BM_ChunkRead)->ArgName("copy0_pinned1_located2")->Arg(0)->Arg(1)->Arg(2);

// Storing a 256 MiB blob that arrived in 1 MiB pieces, durably (issue 18, the cold path), two
// ways: 0 as regpin does, chunks put unlogged into RocksDB's blob files and the commit's
// flush (memtable copy, the blob file's CRC32c, in software in Debian's build); 1 the bytes
// written with pwrite(2) into a file of their own and fdatasync'd, as the peer stores them.
// The SHA-256 both need is BM_Sha256Hasher.
void BM_BlobWrite(benchmark::State& state) {
    scratch s;
    regpin::storage::blob_store blobs(s.db);
    const std::uint32_t chunk = regpin::storage::blob_store::default_chunk_size;
    const std::uint64_t size = 256ull << 20;
    auto piece = random_bytes(chunk);
    using durability = regpin::storage::blob_store::durability;
    std::uint64_t n = 0;
    for (auto _ : state) {
        auto d = regpin::storage::sha256_of("blob " + std::to_string(n++));
        if (state.range(0) == 0) {
            (void)blobs.begin(d, chunk);
            for (std::uint64_t i = 0; i * chunk < size; ++i)
                (void)blobs.put_chunk(d, i, piece, durability::unlogged);
            (void)blobs.commit(d, size, durability::unlogged);
            state.PauseTiming();
            (void)blobs.discard(d);
            state.ResumeTiming();
        } else {
            auto path = s.dir / d.hex();
            int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            for (std::uint64_t i = 0; i * chunk < size; ++i)
                benchmark::DoNotOptimize(::pwrite(fd, piece.data(), chunk, static_cast<off_t>(i * chunk)));
            ::fdatasync(fd);
            ::close(fd);
            state.PauseTiming();
            std::filesystem::remove(path);
            state.ResumeTiming();
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}
BENCHMARK(BM_BlobWrite)->ArgName("rocksdb0_file1")->Arg(0)->Arg(1)->Iterations(6)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
