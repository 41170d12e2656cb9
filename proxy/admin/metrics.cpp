#include "proxy/admin/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace regpin::proxy::admin {

namespace {

bool valid_name(std::string_view s, bool allow_colon) {
    if (s.empty()) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

std::string_view type_name(metric_type t) {
    switch (t) {
        case metric_type::counter:
            return "counter";
        case metric_type::gauge:
            return "gauge";
        case metric_type::histogram:
            return "histogram";
    }
    return "untyped";
}

// `{a="x",b="y"}` plus an optional extra label (histograms' `le`); nothing when empty.
void append_labels(std::string& out, const std::vector<std::string>& names,
                   const std::vector<std::string>& values, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
    if (names.empty() && extra_name.empty()) return;
    out += '{';
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i) out += ',';
        out += names[i];
        out += "=\"";
        out += escape_label_value(values[i]);
        out += '"';
    }
    if (!extra_name.empty()) {
        if (!names.empty()) out += ',';
        out += extra_name;
        out += "=\"";
        out += extra_value;
        out += '"';
    }
    out += '}';
}

void append_sample(std::string& out, std::string_view name, std::string_view suffix,
                   const std::vector<std::string>& names, const std::vector<std::string>& values,
                   std::string_view value, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
    out += name;
    out += suffix;
    append_labels(out, names, values, extra_name, extra_value);
    out += ' ';
    out += value;
    out += '\n';
}

}  // namespace

std::string escape_label_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string escape_help(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    char buf[64];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, ec == std::errc{} ? p : buf);
}

// ---- histogram child

histogram::histogram(const std::vector<double>& bounds)
    : bounds_(bounds),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds.size() + 1)) {}

void histogram::observe(double v) {
    // Bounds are few (about ten): a linear scan beats a binary search and handles NaN (no bound
    // compares >= NaN, so it lands in +Inf).
    std::size_t i = 0;
    while (i < bounds_.size() && !(v <= bounds_[i])) ++i;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
}

histogram::snapshot histogram::read() const {
    snapshot s;
    s.cumulative.reserve(bounds_.size() + 1);
    std::uint64_t running = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        running += buckets_[i].load(std::memory_order_relaxed);
        s.cumulative.push_back(running);
    }
    s.count = running;  // derived from the buckets so `_count` always equals the +Inf bucket
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
}

// ---- families

family_base::family_base(std::string name, std::string help, metric_type type,
                         std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {
    if (!valid_name(name_, true))
        throw std::invalid_argument("metrics: invalid metric name '" + name_ + "'");
    if (type_ == metric_type::counter &&
        (name_.size() <= 6 || name_.compare(name_.size() - 6, 6, "_total") != 0))
        throw std::invalid_argument("metrics: counter name must end in _total: " + name_);
    for (std::size_t i = 0; i < label_names_.size(); ++i) {
        const auto& l = label_names_[i];
        if (!valid_name(l, false) || l.starts_with("__") ||
            (type_ == metric_type::histogram && l == "le"))
            throw std::invalid_argument("metrics: invalid label name '" + l + "' in " + name_);
        if (std::find(label_names_.begin(), label_names_.begin() + i, l) !=
            label_names_.begin() + i)
            throw std::invalid_argument("metrics: duplicate label name '" + l + "' in " + name_);
    }
}

void family_base::check_arity(const std::vector<std::string>& label_values) const {
    if (label_values.size() != label_names_.size())
        throw std::invalid_argument("metrics: " + name_ + " takes " +
                                    std::to_string(label_names_.size()) + " label values, got " +
                                    std::to_string(label_values.size()));
}

void family_base::render(std::string& out) const {
    std::string samples;
    if (!render_samples(samples)) return;
    out += "# HELP ";
    out += name_;
    out += ' ';
    out += escape_help(help_);
    out += "\n# TYPE ";
    out += name_;
    out += ' ';
    out += type_name(type_);
    out += '\n';
    out += samples;
}

template <typename Child>
Child& family<Child>::with(const std::vector<std::string>& label_values) {
    check_arity(label_values);
    std::lock_guard lock(mutex_);
    auto it = children_.find(label_values);
    if (it == children_.end()) it = children_.emplace(label_values, make_child()).first;
    return *it->second;
}

template <typename Child>
std::vector<std::pair<std::vector<std::string>, const Child*>> family<Child>::children() const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<std::vector<std::string>, const Child*>> out;
    out.reserve(children_.size());
    for (const auto& [values, child] : children_) out.emplace_back(values, child.get());
    return out;
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

counter_family::counter_family(std::string name, std::string help,
                               std::vector<std::string> label_names)
    : family(std::move(name), std::move(help), metric_type::counter, std::move(label_names)) {}

std::unique_ptr<counter> counter_family::make_child() const { return std::make_unique<counter>(); }

bool counter_family::render_samples(std::string& out) const {
    auto kids = children();
    for (const auto& [values, c] : kids)
        append_sample(out, name_, "", label_names_, values, std::to_string(c->value()));
    return !kids.empty();
}

gauge_family::gauge_family(std::string name, std::string help, std::vector<std::string> label_names)
    : family(std::move(name), std::move(help), metric_type::gauge, std::move(label_names)) {}

void gauge_family::set_callback(std::function<double()> fn) {
    if (!label_names_.empty())
        throw std::invalid_argument("metrics: callback on labelled gauge " + name_);
    auto shared = fn ? std::make_shared<const std::function<double()>>(std::move(fn)) : nullptr;
    std::lock_guard lock(mutex_);
    callback_ = std::move(shared);
}

std::unique_ptr<gauge> gauge_family::make_child() const { return std::make_unique<gauge>(); }

bool gauge_family::render_samples(std::string& out) const {
    std::shared_ptr<const std::function<double()>> cb;
    {
        std::lock_guard lock(mutex_);
        cb = callback_;
    }
    if (cb) {  // outside the lock: the callback may itself use the registry
        append_sample(out, name_, "", label_names_, {}, format_value((*cb)()));
        return true;
    }
    auto kids = children();
    for (const auto& [values, g] : kids)
        append_sample(out, name_, "", label_names_, values, format_value(g->value()));
    return !kids.empty();
}

histogram_family::histogram_family(std::string name, std::string help,
                                   std::vector<std::string> label_names,
                                   std::vector<double> buckets)
    : family(std::move(name), std::move(help), metric_type::histogram, std::move(label_names)),
      buckets_(std::move(buckets)) {
    if (!buckets_.empty() && std::isinf(buckets_.back()) && buckets_.back() > 0)
        buckets_.pop_back();
    else if (buckets_.empty())
        buckets_ = default_buckets();
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
        if (!std::isfinite(buckets_[i]) || (i > 0 && !(buckets_[i - 1] < buckets_[i])))
            throw std::invalid_argument("metrics: buckets of " + name_ +
                                        " must be finite and strictly increasing");
    }
}

std::vector<double> histogram_family::default_buckets() {
    return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::unique_ptr<histogram> histogram_family::make_child() const {
    return std::make_unique<histogram>(buckets_);
}

bool histogram_family::render_samples(std::string& out) const {
    auto kids = children();
    for (const auto& [values, h] : kids) {
        auto s = h->read();
        for (std::size_t i = 0; i < buckets_.size(); ++i)
            append_sample(out, name_, "_bucket", label_names_, values,
                          std::to_string(s.cumulative[i]), "le", format_value(buckets_[i]));
        append_sample(out, name_, "_bucket", label_names_, values,
                      std::to_string(s.cumulative.back()), "le", "+Inf");
        append_sample(out, name_, "_sum", label_names_, values, format_value(s.sum));
        append_sample(out, name_, "_count", label_names_, values, std::to_string(s.count));
    }
    return !kids.empty();
}

// ---- registry

template <typename Family, typename... Args>
Family& metrics::add(metric_type type, std::string name, Args&&... args) {
    // Construct first (validates the name and labels) outside the registry lock.
    auto fresh = std::make_unique<Family>(name, std::forward<Args>(args)...);
    std::lock_guard lock(mutex_);
    auto it = families_.find(name);
    if (it == families_.end()) {
        auto& f = *fresh;
        families_.emplace(std::move(name), std::move(fresh));
        if (f.label_names().empty()) f.with();
        return f;
    }
    auto* existing = dynamic_cast<Family*>(it->second.get());
    bool same =
        existing && existing->type() == type && existing->label_names() == fresh->label_names();
    if constexpr (std::is_same_v<Family, histogram_family>)
        same = same && existing->buckets() == fresh->buckets();
    if (!same)
        throw std::invalid_argument("metrics: " + name +
                                    " registered again with another type, labels or buckets");
    return *existing;
}

counter_family& metrics::counter(std::string name, std::string help,
                                 std::vector<std::string> label_names) {
    return add<counter_family>(metric_type::counter, std::move(name), std::move(help),
                               std::move(label_names));
}

gauge_family& metrics::gauge(std::string name, std::string help,
                             std::vector<std::string> label_names) {
    return add<gauge_family>(metric_type::gauge, std::move(name), std::move(help),
                             std::move(label_names));
}

histogram_family& metrics::histogram(std::string name, std::string help,
                                     std::vector<std::string> label_names,
                                     std::vector<double> buckets) {
    return add<histogram_family>(metric_type::histogram, std::move(name), std::move(help),
                                 std::move(label_names), std::move(buckets));
}

std::string metrics::render() const {
    std::vector<const family_base*> snapshot;
    {
        std::lock_guard lock(mutex_);
        snapshot.reserve(families_.size());
        for (const auto& [name, f] : families_) snapshot.push_back(f.get());
    }
    std::string out;
    for (const auto* f : snapshot) f->render(out);
    return out;
}

}  // namespace regpin::proxy::admin
