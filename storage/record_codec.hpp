#pragma once
// Value encodings of records, shared by the pin store backends (RocksDB here, etcd in
// proxy/etcd). Versioned so they can evolve.

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

std::string encode_event(const pin_event& e);
std::optional<pin_event> decode_event(std::string_view v);

std::string encode_outbox(const outbox_entry& e);
std::optional<outbox_entry> decode_outbox(std::string_view v);

// 8-byte big-endian, so keys sort by number.
std::string big_endian(std::uint64_t v);
std::uint64_t from_big_endian(std::string_view b);

}  // namespace regpin::storage
