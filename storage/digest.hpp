#pragma once
// Content digests ("sha256:<64 hex>") and streaming hashing (OpenSSL EVP).

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace regpin::storage {

// A parsed digest. Only algorithms regpin can verify are constructed (sha256, sha512), so
// every digest in the cache is one whose bytes were checked.
class digest {
public:
    // Parses "algorithm:encoded". nullopt when the string does not follow the OCI grammar
    // or names an algorithm regpin cannot verify; use classify() to tell the two apart.
    static std::optional<digest> parse(std::string_view s);

    enum class problem { none, malformed, unsupported_algorithm };
    static problem classify(std::string_view s);

    const std::string& str() const { return text_; }
    std::string_view algorithm() const { return std::string_view(text_).substr(0, colon_); }
    std::string_view hex() const { return std::string_view(text_).substr(colon_ + 1); }

    friend bool operator==(const digest& a, const digest& b) { return a.text_ == b.text_; }
    friend auto operator<=>(const digest& a, const digest& b) { return a.text_ <=> b.text_; }

private:
    digest(std::string text, std::size_t colon) : text_(std::move(text)), colon_(colon) {}
    std::string text_;
    std::size_t colon_ = 0;
};

// Incremental hash for one digest algorithm. Not thread-safe; movable.
class hasher {
public:
    // "sha256" or "sha512"; anything else is a programming error (digest::parse filters).
    explicit hasher(std::string_view algorithm = "sha256");
    ~hasher();
    hasher(hasher&&) noexcept;
    hasher& operator=(hasher&&) noexcept;

    void update(std::span<const char> bytes);
    void update(std::string_view bytes) {
        update(std::span<const char>(bytes.data(), bytes.size()));
    }
    // Finishes and returns the digest; the hasher is then reset for reuse.
    digest finish();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// sha256 of a whole buffer.
digest sha256_of(std::string_view bytes);
// Hash `bytes` with the algorithm of `expected` and compare.
bool matches(const digest& expected, std::string_view bytes);

}  // namespace regpin::storage

template <>
struct std::hash<regpin::storage::digest> {
    std::size_t operator()(const regpin::storage::digest& d) const noexcept {
        return std::hash<std::string>{}(d.str());
    }
};
