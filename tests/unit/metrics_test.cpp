#include "proxy/admin/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace regpin::proxy::admin;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

std::size_t count_of(const std::string& haystack, const std::string& needle) {
    std::size_t n = 0;
    for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1))
        ++n;
    return n;
}

}  // namespace

TEST(Metrics, UnlabelledCounterRendersZeroBeforeFirstUse) {
    metrics m;
    m.counter("regpin_things_total", "Things seen.");
    EXPECT_EQ(m.render(),
              "# HELP regpin_things_total Things seen.\n"
              "# TYPE regpin_things_total counter\n"
              "regpin_things_total 0\n");
}

TEST(Metrics, LabelledCounterCountsPerLabelValues) {
    metrics m;
    auto& f = m.counter("regpin_requests_total", "Requests.", {"registry", "status"});
    f.with({"docker.io", "200"}).inc();
    f.with({"docker.io", "200"}).inc(4);
    f.with({"ghcr.io", "404"}).inc();
    EXPECT_EQ(f.with({"docker.io", "200"}).value(), 5u);
    EXPECT_EQ(m.render(),
              "# HELP regpin_requests_total Requests.\n"
              "# TYPE regpin_requests_total counter\n"
              "regpin_requests_total{registry=\"docker.io\",status=\"200\"} 5\n"
              "regpin_requests_total{registry=\"ghcr.io\",status=\"404\"} 1\n");
}

TEST(Metrics, LabelledFamilyWithoutChildrenIsOmitted) {
    metrics m;
    m.counter("regpin_requests_total", "Requests.", {"registry"});
    EXPECT_EQ(m.render(), "");
}

TEST(Metrics, ChildReferenceStaysValidWhileOthersAreCreated) {
    metrics m;
    auto& f = m.counter("regpin_requests_total", "Requests.", {"registry"});
    auto& first = f.with({"a"});
    for (int i = 0; i < 1000; ++i) f.with({"r" + std::to_string(i)}).inc();
    first.inc(7);
    EXPECT_EQ(&first, &f.with({"a"}));
    EXPECT_EQ(f.with({"a"}).value(), 7u);
}

TEST(Metrics, LabelValuesAreEscaped) {
    metrics m;
    m.counter("regpin_x_total", "X.", {"v"}).with({"a\\b\"c\nd"}).inc();
    EXPECT_TRUE(contains(m.render(), "regpin_x_total{v=\"a\\\\b\\\"c\\nd\"} 1\n"));
}

TEST(Metrics, HelpTextIsEscapedButQuotesAreKept) {
    metrics m;
    m.gauge("regpin_g", "line one\nback\\slash \"quoted\"");
    EXPECT_TRUE(contains(m.render(), "# HELP regpin_g line one\\nback\\\\slash \"quoted\"\n"));
    EXPECT_EQ(escape_help("a\nb\\c\"d"), "a\\nb\\\\c\"d");
    EXPECT_EQ(escape_label_value("a\nb\\c\"d"), "a\\nb\\\\c\\\"d");
}

TEST(Metrics, GaugeSetIncDec) {
    metrics m;
    auto& g = m.gauge("regpin_inflight", "In flight.").with();
    g.set(2.5);
    g.inc();
    g.dec(0.5);
    EXPECT_DOUBLE_EQ(g.value(), 3.0);
    EXPECT_TRUE(contains(m.render(), "regpin_inflight 3\n"));
}

TEST(Metrics, GaugeCallbackIsEvaluatedAtEveryRender) {
    metrics m;
    double pins = 1;
    m.gauge("regpin_pins", "Pins.").set_callback([&] { return pins; });
    EXPECT_TRUE(contains(m.render(), "regpin_pins 1\n"));
    pins = 42;
    EXPECT_TRUE(contains(m.render(), "regpin_pins 42\n"));
}

TEST(Metrics, GaugeCallbackMayUseTheRegistry) {
    metrics m;
    auto& hits = m.counter("regpin_hits_total", "Hits.").with();
    hits.inc(3);
    m.gauge("regpin_hits_mirror", "Mirror.").set_callback([&] {
        m.counter("regpin_hits_total", "Hits.");  // takes the registry lock: must not deadlock
        return static_cast<double>(hits.value());
    });
    EXPECT_TRUE(contains(m.render(), "regpin_hits_mirror 3\n"));
}

TEST(Metrics, GaugeCallbackOnLabelledFamilyIsRejected) {
    metrics m;
    auto& f = m.gauge("regpin_g", "G.", {"a"});
    EXPECT_THROW(f.set_callback([] { return 1.0; }), std::invalid_argument);
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInfSumAndCount) {
    metrics m;
    auto& h = m.histogram("regpin_seconds", "Durations.", {"op"}, {0.1, 1, 10}).with({"get"});
    h.observe(0.05);
    h.observe(0.1);  // on the bound: counts in le="0.1"
    h.observe(0.5);
    h.observe(20);
    EXPECT_EQ(m.render(),
              "# HELP regpin_seconds Durations.\n"
              "# TYPE regpin_seconds histogram\n"
              "regpin_seconds_bucket{op=\"get\",le=\"0.1\"} 2\n"
              "regpin_seconds_bucket{op=\"get\",le=\"1\"} 3\n"
              "regpin_seconds_bucket{op=\"get\",le=\"10\"} 3\n"
              "regpin_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"
              "regpin_seconds_sum{op=\"get\"} 20.65\n"
              "regpin_seconds_count{op=\"get\"} 4\n");
}

TEST(Metrics, HistogramDefaultsAndTrailingInfBound) {
    metrics m;
    EXPECT_EQ(m.histogram("regpin_a_seconds", "A.").buckets(), histogram_family::default_buckets());
    auto inf = std::numeric_limits<double>::infinity();
    EXPECT_EQ(m.histogram("regpin_b_seconds", "B.", {}, {1, 2, inf}).buckets(),
              (std::vector<double>{1, 2}));
    auto out = m.render();
    EXPECT_EQ(count_of(out, "regpin_b_seconds_bucket{le=\"+Inf\"} 0\n"), 1u);
    EXPECT_TRUE(contains(out, "regpin_a_seconds_bucket{le=\"0.005\"} 0\n"));
}

TEST(Metrics, FamiliesAreSortedWithOneHelpAndTypeEach) {
    metrics m;
    auto& b = m.counter("regpin_b_total", "B.", {"x"});
    m.gauge("regpin_a", "A.");
    b.with({"1"}).inc();
    b.with({"2"}).inc();
    auto out = m.render();
    EXPECT_LT(out.find("regpin_a "), out.find("regpin_b_total{"));
    EXPECT_EQ(count_of(out, "# HELP regpin_b_total "), 1u);
    EXPECT_EQ(count_of(out, "# TYPE regpin_b_total "), 1u);
}

TEST(Metrics, ReRegisteringReturnsTheSameFamily) {
    metrics m;
    auto& a = m.counter("regpin_x_total", "X.", {"a"});
    EXPECT_EQ(&a, &m.counter("regpin_x_total", "other help", {"a"}));
    EXPECT_THROW(m.counter("regpin_x_total", "X.", {"b"}), std::invalid_argument);
    EXPECT_THROW(m.gauge("regpin_x_total", "X.", {"a"}), std::invalid_argument);
    m.histogram("regpin_h", "H.", {}, {1, 2});
    EXPECT_THROW(m.histogram("regpin_h", "H.", {}, {1, 3}), std::invalid_argument);
}

TEST(Metrics, MisuseIsRejected) {
    metrics m;
    EXPECT_THROW(m.counter("regpin_requests", "no _total suffix"), std::invalid_argument);
    EXPECT_THROW(m.gauge("1bad", "B."), std::invalid_argument);
    EXPECT_THROW(m.gauge("bad-name", "B."), std::invalid_argument);
    EXPECT_THROW(m.gauge("regpin_g", "G.", {"__reserved"}), std::invalid_argument);
    EXPECT_THROW(m.gauge("regpin_g", "G.", {"a", "a"}), std::invalid_argument);
    EXPECT_THROW(m.histogram("regpin_h", "H.", {"le"}), std::invalid_argument);
    EXPECT_THROW(m.histogram("regpin_h", "H.", {}, {2, 1}), std::invalid_argument);
    auto& f = m.counter("regpin_ok_total", "OK.", {"a", "b"});
    EXPECT_THROW(f.with({"only-one"}), std::invalid_argument);
    EXPECT_EQ(m.render(), "");  // nothing half-registered
}

TEST(Metrics, ValuesFormatAsPrometheusFloats) {
    EXPECT_EQ(format_value(0), "0");
    EXPECT_EQ(format_value(0.005), "0.005");
    EXPECT_EQ(format_value(2.5), "2.5");
    EXPECT_EQ(format_value(1e21), "1e+21");
    EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
    EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
    EXPECT_EQ(format_value(std::nan("")), "NaN");
}

TEST(Metrics, ConcurrentIncrementsAreNotLost) {
    metrics m;
    auto& f = m.counter("regpin_c_total", "C.", {"t"});
    auto& h = m.histogram("regpin_h_seconds", "H.", {}, {1});
    constexpr int threads = 4, per_thread = 20000;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            for (int i = 0; i < per_thread; ++i) {
                f.with({"shared"}).inc();
                f.with({"t" + std::to_string(i % 64)}).inc();  // creates children concurrently
                h.with().observe(0.5);
                if (i % 1000 == 0) (void)m.render();
            }
        });
    for (auto& t : pool) t.join();
    EXPECT_EQ(f.with({"shared"}).value(), std::uint64_t{threads * per_thread});
    auto s = h.with().read();
    EXPECT_EQ(s.count, std::uint64_t{threads * per_thread});
    EXPECT_DOUBLE_EQ(s.sum, threads * per_thread * 0.5);
}
