/* Prometheus text exposition. Written by hand: Debian ships no C client
 * library for it, and the format is a few lines of text. Values are atomics,
 * safe to update from any thread without a lock. */
#ifndef SHOP_METRICS_H
#define SHOP_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define METRICS_NBUCKETS 14

/* Upper bounds, in seconds, of the latency histogram's finite buckets. */
extern const double metrics_bucket_bounds[METRICS_NBUCKETS];

typedef struct metrics_histogram {
    _Atomic uint64_t buckets[METRICS_NBUCKETS + 1]; /* last one is +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
} metrics_histogram;

void metrics_histogram_observe(metrics_histogram *h, double seconds);

/* Writes the _bucket, _sum and _count lines of one labelled series.
 * `labels` is the inside of the braces, e.g. `route="/x",status="200"`. */
void metrics_histogram_write(FILE *out, const char *name, const char *labels,
                             const metrics_histogram *h);

/* Writes a "# HELP" and "# TYPE" header. */
void metrics_header(FILE *out, const char *name, const char *type, const char *help);

/* Writes one sample of series `name`: `labels` is the inside of the braces
 * (NULL or "": none). */
void metrics_sample(FILE *out, const char *name, const char *labels, uint64_t value);

/* A series of one unlabelled sample: its header, then the sample. */
void metrics_series(FILE *out, const char *name, const char *type, const char *help,
                    uint64_t value);

#endif
