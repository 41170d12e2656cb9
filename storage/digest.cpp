#include "storage/digest.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace regpin::storage {

namespace {

bool is_alnum_lower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_hex_lower(char c) { return (c >= 'a' && c <= 'f') || (c >= '0' && c <= '9'); }

// algorithm := component ([+._-] component)*; component := [a-z0-9]+
bool valid_algorithm(std::string_view a) {
    if (a.empty()) return false;
    bool need_component = true;
    for (char c : a) {
        if (is_alnum_lower(c)) {
            need_component = false;
        } else if (c == '+' || c == '.' || c == '_' || c == '-') {
            if (need_component) return false;
            need_component = true;
        } else {
            return false;
        }
    }
    return !need_component;
}

// encoded := [a-zA-Z0-9=_-]+
bool valid_encoded(std::string_view e) {
    if (e.empty()) return false;
    for (char c : e) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '=' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

std::size_t hex_length(std::string_view algorithm) {
    if (algorithm == "sha256") return 64;
    if (algorithm == "sha512") return 128;
    return 0;
}

const EVP_MD* evp_for(std::string_view algorithm) {
    if (algorithm == "sha256") return EVP_sha256();
    if (algorithm == "sha512") return EVP_sha512();
    throw std::invalid_argument("unsupported digest algorithm");
}

}  // namespace

digest::problem digest::classify(std::string_view s) {
    if (s.size() > 256) return problem::malformed;
    auto colon = s.find(':');
    if (colon == std::string_view::npos) return problem::malformed;
    auto alg = s.substr(0, colon);
    auto enc = s.substr(colon + 1);
    if (!valid_algorithm(alg) || !valid_encoded(enc)) return problem::malformed;
    auto want = hex_length(alg);
    if (want == 0) return problem::unsupported_algorithm;
    if (enc.size() != want) return problem::malformed;
    for (char c : enc)
        if (!is_hex_lower(c)) return problem::malformed;
    return problem::none;
}

std::optional<digest> digest::parse(std::string_view s) {
    if (classify(s) != problem::none) return std::nullopt;
    return digest(std::string(s), s.find(':'));
}

struct hasher::impl {
    EVP_MD_CTX* ctx = nullptr;
    const EVP_MD* md = nullptr;
    std::string algorithm;
    ~impl() { EVP_MD_CTX_free(ctx); }
};

hasher::hasher(std::string_view algorithm) : impl_(std::make_unique<impl>()) {
    impl_->md = evp_for(algorithm);
    impl_->algorithm = std::string(algorithm);
    impl_->ctx = EVP_MD_CTX_new();
    if (impl_->ctx == nullptr || EVP_DigestInit_ex(impl_->ctx, impl_->md, nullptr) != 1)
        throw std::runtime_error("EVP_DigestInit_ex failed");
}

hasher::~hasher() = default;
hasher::hasher(hasher&&) noexcept = default;
hasher& hasher::operator=(hasher&&) noexcept = default;

void hasher::update(std::span<const char> bytes) {
    if (!bytes.empty()) EVP_DigestUpdate(impl_->ctx, bytes.data(), bytes.size());
}

digest hasher::finish() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(impl_->ctx, out, &len);
    EVP_DigestInit_ex(impl_->ctx, impl_->md, nullptr);
    static constexpr char hexdigits[] = "0123456789abcdef";
    std::string text = impl_->algorithm + ":";
    for (unsigned int i = 0; i < len; ++i) {
        text.push_back(hexdigits[out[i] >> 4]);
        text.push_back(hexdigits[out[i] & 0xf]);
    }
    return *digest::parse(text);
}

digest sha256_of(std::string_view bytes) {
    hasher h("sha256");
    h.update(bytes);
    return h.finish();
}

bool matches(const digest& expected, std::string_view bytes) {
    hasher h(expected.algorithm());
    h.update(bytes);
    return h.finish() == expected;
}

}  // namespace regpin::storage
