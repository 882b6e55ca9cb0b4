#include "lib/metrics.h"

#include <inttypes.h>

const double metrics_bucket_bounds[METRICS_NBUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

void metrics_histogram_observe(metrics_histogram *h, double seconds)
{
    size_t i = 0;
    while (i < METRICS_NBUCKETS && seconds > metrics_bucket_bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

void metrics_histogram_write(FILE *out, const char *name, const char *labels,
                             const metrics_histogram *h)
{
    /* Prometheus buckets are cumulative. */
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= METRICS_NBUCKETS; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < METRICS_NBUCKETS)
            fprintf(out, "%s_bucket{%s,le=\"%g\"} %" PRIu64 "\n", name, labels,
                    metrics_bucket_bounds[i], cumulative);
        else
            fprintf(out, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, labels, cumulative);
    }
    fprintf(out, "%s_sum{%s} %.6f\n", name, labels,
            (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    fprintf(out, "%s_count{%s} %" PRIu64 "\n", name, labels,
            atomic_load_explicit(&h->count, memory_order_relaxed));
}

void metrics_header(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_sample(FILE *out, const char *name, const char *labels, uint64_t value)
{
    if (labels && *labels)
        fprintf(out, "%s{%s} %" PRIu64 "\n", name, labels, value);
    else
        fprintf(out, "%s %" PRIu64 "\n", name, value);
}

void metrics_series(FILE *out, const char *name, const char *type, const char *help, uint64_t value)
{
    metrics_header(out, name, type, help);
    metrics_sample(out, name, NULL, value);
}
