#include "proxy/cli/yaml_images.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>

#include <yaml.h>

namespace regpin::proxy::cli {

namespace {

// libyaml's marks count characters (a byte-order mark too, with the encoding set to UTF-8);
// the rewrite needs bytes. Byte offset of each character start (identity for ASCII text).
class char_offsets {
public:
    explicit char_offsets(std::string_view text) : size_(text.size()) {
        ascii_ = std::all_of(text.begin(), text.end(),
                             [](char c) { return static_cast<unsigned char>(c) < 0x80; });
        if (ascii_) return;
        for (std::size_t i = 0; i < text.size(); ++i)
            if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) starts_.push_back(i);
    }
    std::size_t byte(std::size_t char_index) const {
        if (ascii_) return std::min(char_index, size_);
        return char_index < starts_.size() ? starts_[char_index] : size_;
    }

private:
    std::size_t size_;
    bool ascii_ = true;
    std::vector<std::size_t> starts_;
};

bool container_list(const std::string& key) {
    return key == "containers" || key == "initContainers" || key == "ephemeralContainers";
}

struct frame {
    bool mapping = false;
    bool expect_key = true;  // mapping: the next node is a key
    std::string key;         // mapping: the current key (a scalar's), else empty
    std::string list_key;    // sequence: the key it is the value of, else empty
    bool container = false;  // mapping: an item of a container list
};

// A scalar event's place in the text: its bytes (quotes included, the &anchor and !tag before
// it left out), its style and line.
yaml_image scalar_site(std::string_view text, const char_offsets& offsets, const yaml_event_t& e) {
    // The event starts at the node's properties: the scalar itself starts after them.
    std::size_t begin = offsets.byte(e.start_mark.index);
    std::size_t end = offsets.byte(e.end_mark.index);
    auto blank = [&](std::size_t i) {
        return text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r';
    };
    while (begin < end && (text[begin] == '&' || text[begin] == '!')) {
        while (begin < end && !blank(begin)) ++begin;
        while (begin < end && blank(begin)) ++begin;
    }
    yaml_image img{
        begin, end,
        std::string(reinterpret_cast<const char*>(e.data.scalar.value), e.data.scalar.length), 0,
        e.start_mark.line + 1};
    switch (e.data.scalar.style) {
        case YAML_SINGLE_QUOTED_SCALAR_STYLE:
            img.style = '\'';
            break;
        case YAML_DOUBLE_QUOTED_SCALAR_STYLE:
            img.style = '"';
            break;
        case YAML_LITERAL_SCALAR_STYLE:
        case YAML_FOLDED_SCALAR_STYLE:
            img.style = '|';
            break;
        default:
            break;
    }
    return img;
}

struct parser_guard {
    yaml_parser_t p;
    parser_guard() { yaml_parser_initialize(&p); }
    ~parser_guard() { yaml_parser_delete(&p); }
};
struct event_guard {
    yaml_event_t e;
    ~event_guard() { yaml_event_delete(&e); }
};

}  // namespace

std::vector<yaml_image> find_images(std::string_view text) {
    char_offsets offsets(text);
    parser_guard g;
    yaml_parser_set_input_string(&g.p, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    // UTF-8 only: the byte spans are computed from it (Kubernetes YAML is UTF-8; UTF-16 text is
    // refused as not YAML instead of being rewritten at the wrong places).
    yaml_parser_set_encoding(&g.p, YAML_UTF8_ENCODING);
    std::vector<frame> stack;
    std::vector<yaml_image> found;
    std::map<std::string, yaml_image> anchors;
    std::vector<std::string> aliases;

    // Where the next node sits: a key, a key's value, or a sequence item.
    enum class slot { root, key, value, item };
    auto where = [&]() {
        if (stack.empty()) return slot::root;
        if (!stack.back().mapping) return slot::item;
        return stack.back().expect_key ? slot::key : slot::value;
    };
    // A node ended in its parent: a key is followed by its value and a value by the next key.
    auto ended = [&](std::optional<std::string> scalar_key) {
        if (stack.empty() || !stack.back().mapping) return;
        auto& f = stack.back();
        if (f.expect_key) {
            f.key = scalar_key.value_or("");
            f.expect_key = false;
        } else {
            f.expect_key = true;
        }
    };
    auto image_place = [&]() {
        return where() == slot::value && stack.back().container && stack.back().key == "image";
    };

    for (;;) {
        event_guard ev;
        if (!yaml_parser_parse(&g.p, &ev.e)) {
            std::string what = g.p.problem ? g.p.problem : "not YAML";
            if (g.p.context) what = std::string(g.p.context) + ": " + what;
            throw yaml_error("line " + std::to_string(g.p.problem_mark.line + 1) + ", column " +
                             std::to_string(g.p.problem_mark.column + 1) + ": " + what);
        }
        const auto& e = ev.e;
        if (e.type == YAML_STREAM_END_EVENT) break;
        switch (e.type) {
            case YAML_MAPPING_START_EVENT:
            case YAML_SEQUENCE_START_EVENT: {
                frame f;
                f.mapping = e.type == YAML_MAPPING_START_EVENT;
                auto s = where();
                if (f.mapping)
                    f.container = s == slot::item && container_list(stack.back().list_key);
                else if (s == slot::value)
                    f.list_key = stack.back().key;
                stack.push_back(std::move(f));
                break;
            }
            case YAML_MAPPING_END_EVENT:
            case YAML_SEQUENCE_END_EVENT:
                stack.pop_back();
                ended(std::nullopt);
                break;
            case YAML_SCALAR_EVENT: {
                bool is_image = image_place();
                if (is_image || e.data.scalar.anchor) {
                    auto img = scalar_site(text, offsets, e);
                    if (e.data.scalar.anchor)
                        anchors[reinterpret_cast<const char*>(e.data.scalar.anchor)] = img;
                    if (is_image) found.push_back(std::move(img));
                }
                if (where() == slot::key)
                    ended(std::string(reinterpret_cast<const char*>(e.data.scalar.value),
                                      e.data.scalar.length));
                else
                    ended(std::nullopt);
                break;
            }
            case YAML_ALIAS_EVENT:
                if (image_place())
                    aliases.push_back(reinterpret_cast<const char*>(e.data.alias.anchor));
                ended(std::nullopt);
                break;
            default:
                break;
        }
    }
    for (const auto& a : aliases) {
        auto it = anchors.find(a);
        if (it == anchors.end()) continue;
        bool seen = std::any_of(found.begin(), found.end(),
                                [&](const yaml_image& f) { return f.begin == it->second.begin; });
        if (!seen) found.push_back(it->second);
    }
    std::sort(found.begin(), found.end(),
              [](const yaml_image& a, const yaml_image& b) { return a.begin < b.begin; });
    return found;
}

std::string replace_images(std::string_view text, const std::vector<yaml_image>& images,
                           const std::vector<std::string>& values) {
    std::string out;
    out.reserve(text.size() + images.size() * 80);
    std::size_t at = 0;
    if (images.size() != values.size()) throw yaml_error("one value per image is needed");
    for (std::size_t i = 0; i < images.size(); ++i) {
        const auto& img = images[i];
        const auto& v = values[i];
        if (img.begin < at || img.end < img.begin || img.end > text.size())
            throw yaml_error("line " + std::to_string(img.line) + ": images out of order");
        if (img.style == '|')
            throw yaml_error("line " + std::to_string(img.line) + ": the image '" + img.value +
                             "' is a block scalar; write it on one line to have it pinned");
        if (v.find_first_of("\"'\\#\n\r\t {}[],&*!|>%`") != std::string::npos)
            throw yaml_error("line " + std::to_string(img.line) + ": '" + v +
                             "' is not an image reference");
        out.append(text.substr(at, img.begin - at));
        if (img.style == 0)
            out += v;
        else
            out += img.style + v + img.style;
        at = img.end;
    }
    out.append(text.substr(at));
    return out;
}

}  // namespace regpin::proxy::cli
