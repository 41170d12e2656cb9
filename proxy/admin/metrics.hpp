#pragma once
// A small Prometheus metrics registry: counters, gauges and histograms with fixed label names,
// rendered in the text exposition format 0.0.4. Pure: no I/O, no HTTP.
//
// Thread-safety: everything is safe to call concurrently. Registering a family or creating a
// child (`with`) takes a mutex; once a child exists, inc/set/observe are lock-free atomics. A
// child reference stays valid as long as the registry lives, so hot paths look it up once and
// keep it.
//
// Misuse (an invalid metric or label name, a counter name not ending in "_total", re-registering
// a name with another type, labels or buckets, the wrong number of label values) is a programming
// error and throws std::invalid_argument.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace regpin::proxy::admin {

class counter {
public:
    void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
    std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> value_{0};
};

class gauge {
public:
    void set(double v) { value_.store(v, std::memory_order_relaxed); }
    void inc(double d = 1) { value_.fetch_add(d, std::memory_order_relaxed); }
    void dec(double d = 1) { value_.fetch_sub(d, std::memory_order_relaxed); }
    double value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0};
};

class histogram {
public:
    // `bounds`: the family's finite upper bounds, strictly increasing; outlives the child.
    explicit histogram(const std::vector<double>& bounds);

    // Counts `v` in the first bucket whose bound is >= v (+Inf when none; NaN goes there too).
    void observe(double v);

    struct snapshot {
        std::vector<std::uint64_t> cumulative;  // one per finite bound, then +Inf
        double sum = 0;
        std::uint64_t count = 0;  // equals cumulative.back()
    };
    // Not atomic across buckets: a concurrent observe may show in a bucket but not yet in sum.
    snapshot read() const;

private:
    const std::vector<double>& bounds_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
    std::atomic<double> sum_{0};
};

enum class metric_type { counter, gauge, histogram };

// What every family shares: name, help, type, label names, and rendering.
class family_base {
public:
    virtual ~family_base() = default;
    const std::string& name() const { return name_; }
    metric_type type() const { return type_; }
    const std::vector<std::string>& label_names() const { return label_names_; }
    // Appends "# HELP", "# TYPE" and the samples; nothing at all when the family has no sample.
    void render(std::string& out) const;

protected:
    family_base(std::string name, std::string help, metric_type type,
                std::vector<std::string> label_names);
    void check_arity(const std::vector<std::string>& label_values) const;
    // Appends this family's samples (children in label-value order); false if there were none.
    virtual bool render_samples(std::string& out) const = 0;

    std::string name_;
    std::string help_;
    metric_type type_;
    std::vector<std::string> label_names_;
    mutable std::mutex mutex_;  // guards the children maps of derived classes
};

template <typename Child>
class family : public family_base {
public:
    // The child for these label values (one per label name, in order), created on first use.
    // The reference stays valid for the registry's lifetime.
    Child& with(const std::vector<std::string>& label_values = {});

protected:
    using family_base::family_base;
    virtual std::unique_ptr<Child> make_child() const = 0;
    // Snapshot of the children, taken under the mutex (pointers stay valid: never erased).
    std::vector<std::pair<std::vector<std::string>, const Child*>> children() const;

    std::map<std::vector<std::string>, std::unique_ptr<Child>> children_;  // guarded by mutex_
};

extern template class family<counter>;
extern template class family<gauge>;
extern template class family<histogram>;

class counter_family final : public family<counter> {
public:
    counter_family(std::string name, std::string help, std::vector<std::string> label_names);

private:
    std::unique_ptr<counter> make_child() const override;
    bool render_samples(std::string& out) const override;
};

class gauge_family final : public family<gauge> {
public:
    gauge_family(std::string name, std::string help, std::vector<std::string> label_names);

    // Unlabelled families only: the value is computed by `fn` at every render (called without
    // any registry lock held, on the rendering thread), replacing the stored value. `fn` must
    // not throw. An empty function turns the callback off.
    void set_callback(std::function<double()> fn);

private:
    std::unique_ptr<gauge> make_child() const override;
    bool render_samples(std::string& out) const override;

    std::shared_ptr<const std::function<double()>> callback_;  // guarded by mutex_
};

class histogram_family final : public family<histogram> {
public:
    // `buckets`: finite upper bounds, strictly increasing (a trailing +Inf is accepted and
    // dropped); empty means default_buckets().
    histogram_family(std::string name, std::string help, std::vector<std::string> label_names,
                     std::vector<double> buckets);
    const std::vector<double>& buckets() const { return buckets_; }

    // Prometheus's defaults, in seconds: 0.005 ... 10.
    static std::vector<double> default_buckets();

private:
    std::unique_ptr<histogram> make_child() const override;
    bool render_samples(std::string& out) const override;

    std::vector<double> buckets_;
};

class metrics {
public:
    metrics() = default;
    metrics(const metrics&) = delete;
    metrics& operator=(const metrics&) = delete;

    // Registers a family, or returns the existing one when `name` was registered before with
    // the same type and label names (and buckets); help text of the first registration wins.
    // Unlabelled families get their single child at once, so they render 0 before any use.
    counter_family& counter(std::string name, std::string help,
                            std::vector<std::string> label_names = {});
    gauge_family& gauge(std::string name, std::string help,
                        std::vector<std::string> label_names = {});
    histogram_family& histogram(std::string name, std::string help,
                                std::vector<std::string> label_names = {},
                                std::vector<double> buckets = {});

    // Text exposition format 0.0.4 (Content-Type "text/plain; version=0.0.4; charset=utf-8"):
    // families sorted by name, one # HELP and # TYPE each; families without samples omitted.
    std::string render() const;

private:
    template <typename Family, typename... Args>
    Family& add(metric_type type, std::string name, Args&&... args);

    mutable std::mutex mutex_;
    std::map<std::string, std::unique_ptr<family_base>> families_;
};

// Exposition-format escaping, exposed for tests.
// Label values: backslash, double quote and newline. Help text: backslash and newline.
std::string escape_label_value(std::string_view v);
std::string escape_help(std::string_view v);
// "+Inf", "-Inf", "NaN", or the shortest text that reads back as `v` ("0.005", "1e+21").
std::string format_value(double v);

}  // namespace regpin::proxy::admin
