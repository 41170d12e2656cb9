// Bundles: the tar reader refuses crafted input (never loops, never reads outside the file), the
// writer's long names are read back by GNU tar, and regpin-pins.json is validated entry by entry.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "proxy/bundle/pins_file.hpp"
#include "proxy/bundle/tar.hpp"
#include "tests/unit/temp_dir.hpp"

using namespace regpin::proxy::bundle;

namespace {

// One ustar header: `size_field` is written as given (12 bytes: octal text or base-256).
std::string header(const std::string& name, char type, const std::string& size_field) {
    std::array<char, 512> h{};
    std::memcpy(h.data(), name.data(), name.size());
    std::memcpy(h.data() + 100, "0000644", 7);
    std::memcpy(h.data() + 124, size_field.data(), std::min<std::size_t>(12, size_field.size()));
    h[156] = type;
    std::memcpy(h.data() + 257, "ustar", 6);
    std::memset(h.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (char c : h) sum += static_cast<unsigned char>(c);
    std::snprintf(h.data() + 148, 8, "%06o", sum);
    return std::string(h.data(), h.size());
}

std::string base256(std::uint64_t v, unsigned char top = 0x80) {
    std::string f(12, '\0');
    f[0] = static_cast<char>(top);
    for (int i = 11; i >= 4; --i, v >>= 8) f[i] = static_cast<char>(v & 0xff);
    return f;
}

std::string tar_of(const std::string& body) { return body + std::string(1024, '\0'); }

std::string refusal(const std::string& bytes) {
    std::istringstream in(bytes);
    try {
        index_tar(in);
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "";
}

const std::string digest_a = "sha256:" + std::string(64, 'a');

std::string pins_doc(const std::string& entries) {
    return R"({"version":1,"pins":[)" + entries + "]}";
}

std::string pins_error(const std::string& doc) {
    try {
        read_pins_file(doc);
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(BundleTar, AHugeBase256SizeIsRefusedNotWrapped) {
    // 2^64 - 512: content + size wraps to just before the header, which looped forever.
    auto wrap = header("blobs/x", '5', base256(~std::uint64_t{0} - 511, 0xff));
    EXPECT_NE(refusal(tar_of(wrap)), "");
    auto huge = header("blobs/x", '0', base256(std::uint64_t{1} << 62));
    EXPECT_NE(refusal(tar_of(huge)).find("truncated"), std::string::npos);
    auto past = header("blobs/x", '1', "00000077777");  // a link entry claiming 32 KiB
    EXPECT_NE(refusal(tar_of(past)).find("truncated"), std::string::npos);
}

TEST(BundleTar, AMalformedPaxRecordIsRefused) {
    std::string record = "99999999999999999999 size=1\n";
    char size[13];
    std::snprintf(size, sizeof size, "%011zo", record.size());
    auto bytes = header("pax", 'x', size) + record + std::string(512 - record.size(), '\0');
    EXPECT_NE(refusal(tar_of(bytes)).find("pax"), std::string::npos);
}

TEST(BundleTar, LongNamesAreWrittenSoGnuTarAndTheReaderAgree) {
    regpin::testing::temp_dir dir;
    auto path = dir.str() + "/long.tar";
    const std::string sha512 = "blobs/sha512/" + std::string(128, 'c');
    const std::string prefixed = std::string(120, 'p') + "/name";
    {
        tar_writer w(path);
        w.add(sha512, "five!");
        w.add(prefixed, "six!!!");
        w.add("index.json", "{}");
        w.finish();
    }
    std::ifstream in(path, std::ios::binary);
    auto entries = index_tar(in);
    ASSERT_EQ(entries.size(), 3u);
    ASSERT_TRUE(entries.count(sha512));
    EXPECT_EQ(read_entry(in, entries.at(sha512), 100), "five!");
    ASSERT_TRUE(entries.count(prefixed));
    EXPECT_EQ(read_entry(in, entries.at(prefixed), 100), "six!!!");

    auto* p = popen(("tar -tf " + path).c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string listed;
    char buf[512];
    while (auto n = fread(buf, 1, sizeof buf, p)) listed.append(buf, n);
    EXPECT_EQ(pclose(p), 0);
    EXPECT_EQ(listed, sha512 + "\n" + prefixed + "\nindex.json\n");
}

TEST(BundlePinsFile, StateAndPendingAndDecisionsAreRead) {
    auto b = "sha256:" + std::string(64, 'b');
    auto pins = read_pins_file(pins_doc(
        R"({"registry":"docker.io","repository":"library/x","tag":"1","accept_class":15,"digest":")" +
        digest_a + R"(","state":"rejected","pending_digest":")" + b +
        R"(","first_seen_ms":5,"pending_since_ms":7,"decided":[")" + digest_a + R"("]})"));
    ASSERT_EQ(pins.size(), 1u);
    EXPECT_EQ(pins[0].state, regpin::storage::pin_state::rejected);
    ASSERT_TRUE(pins[0].pending_digest);
    EXPECT_EQ(pins[0].pending_digest->str(), b);
    EXPECT_EQ(pins[0].pending_since_ms, 7);
    EXPECT_EQ(pins[0].decided, std::vector<std::string>{digest_a});
}

TEST(BundlePinsFile, EveryBadEntryIsRefusedWithItsName) {
    auto entry = [](const std::string& registry, const std::string& repository,
                    const std::string& tag, const std::string& rest = "") {
        return R"({"registry":")" + registry + R"(","repository":")" + repository + R"(","tag":")" +
               tag + R"(","digest":")" + digest_a + "\"" + rest + "}";
    };
    const auto good = entry("docker.io", "library/ok", "1");
    struct bad {
        std::string entry, says;
    } cases[] = {
        {entry("docker.io", "nginx", "1"),
         "pins[1] (docker.io/nginx:1): the repository must be written 'library/nginx'"},
        {entry("docker.io", "library/x", "a\\u0000b"), "contains NUL"},
        {entry("docker.io", "library/X", "1"), "pins[1] (docker.io/library/X:1)"},
        {entry("docker.io", "library/x", "-bad"), "pins[1]"},
        {entry("nohost", "library/x", "1"), "not a registry host"},
        {entry("a b", "library/x", "1"), "not a host name"},
        {entry("docker.io", "library/x", "1", R"(,"state":"rejected")"),
         "needs a \"pending_digest\""},
        {entry("docker.io", "library/x", "1", R"(,"state":"paused")"), "\"state\" is not"},
        {entry("docker.io", "library/x", "1", R"(,"pending_digest":")" + digest_a + "\""),
         "under state pinned"},
        {entry("docker.io", "library/x", "1", R"(,"accept_class":16)"), "accept_class"},
        {entry("docker.io", "library/x", "1", R"(,"decided":["nope"])"), "decided"},
        {R"({"registry":"docker.io","repository":"library/x","tag":"1","digest":"sha256:1"})",
         "not a digest"},
        {R"({"registry":"docker.io","repository":"library/x","tag":1,"digest":"x"})",
         "\"tag\" is not a string"},
        // Found by the fuzzer: an empty required digest was dereferenced as if present.
        {R"({"registry":"docker.io","repository":"library/x","tag":"1","digest":""})",
         "\"digest\" is empty"},
        {"[]", "pins[1]: is not an object"},
        {good, "the same tag and accept class twice"},
    };
    for (const auto& c : cases) {
        auto error = pins_error(pins_doc(good + "," + c.entry));
        EXPECT_NE(error.find(c.says), std::string::npos) << c.entry << " -> " << error;
        EXPECT_EQ(error.rfind("regpin-pins.json: ", 0), 0u) << error;
    }
    EXPECT_NE(pins_error("{}").find("malformed"), std::string::npos);
    EXPECT_EQ(pins_error(pins_doc(good)), "");
}
