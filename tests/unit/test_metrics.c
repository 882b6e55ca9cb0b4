#include "lib/metrics.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

Test(metrics, histogram_buckets_are_cumulative)
{
    metrics_histogram h = {0};
    metrics_histogram_observe(&h, 0.0002); /* first bucket */
    metrics_histogram_observe(&h, 0.003);  /* le 0.005 */
    metrics_histogram_observe(&h, 60);     /* +Inf only */
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    metrics_histogram_write(out, "x_seconds", "route=\"/a\"", &h);
    fclose(out);
    cr_assert_not_null(strstr(text, "x_seconds_bucket{route=\"/a\",le=\"0.0005\"} 1\n"));
    cr_assert_not_null(strstr(text, "x_seconds_bucket{route=\"/a\",le=\"0.0025\"} 1\n"));
    cr_assert_not_null(strstr(text, "x_seconds_bucket{route=\"/a\",le=\"0.005\"} 2\n"));
    cr_assert_not_null(strstr(text, "x_seconds_bucket{route=\"/a\",le=\"10\"} 2\n"));
    cr_assert_not_null(strstr(text, "x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n"));
    cr_assert_not_null(strstr(text, "x_seconds_count{route=\"/a\"} 3\n"));
    cr_assert_not_null(strstr(text, "x_seconds_sum{route=\"/a\"} 60.003200\n"));
    free(text);
}
