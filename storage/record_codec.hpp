#pragma once
// Internal to storage/: value encodings of records. Versioned so they can evolve.

#include <optional>
#include <string>
#include <string_view>

#include "storage/blob_store.hpp"
#include "storage/manifest_store.hpp"
#include "storage/pin.hpp"

namespace regpin::storage {

std::string encode_blob_record(const blob_record& r);
std::optional<blob_record> decode_blob_record(std::string_view v);

std::string encode_manifest(const manifest& m);
std::optional<manifest> decode_manifest(std::string_view v);

std::string encode_pin(const pin& p);
std::optional<pin> decode_pin(const pin_key& key, std::string_view v);

}  // namespace regpin::storage
