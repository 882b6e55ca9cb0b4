/* Traces (lib/trace.h): the W3C traceparent read and written, the
 * sampler, a span in Zipkin v2 JSON, and the exporter against a collector
 * of the test's own (our HTTP layer in the test process) and against none. */
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/trace.h"
#include "served.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <pthread.h>

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

Test(trace, a_traceparent_is_read_and_written_back_alike)
{
    trace_ctx c;
    cr_assert_eq(trace_parse(GOOD, &c), 0);
    cr_assert(c.sampled);
    cr_assert_eq(c.trace_id[0], 0x4b);
    cr_assert_eq(c.span_id[7], 0xb7);
    char out[TRACE_PARENT_LEN + 1];
    trace_format(&c, out);
    cr_assert_str_eq(out, GOOD);
    cr_assert_eq(trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c), 0);
    cr_assert_not(c.sampled);
    /* A later version's first four fields are read; what follows is not. */
    cr_assert_eq(trace_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", &c),
                 0);
}

Test(trace, a_malformed_traceparent_is_refused)
{
    const char *bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 is exact */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* no trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* no parent */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   /* not hex */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  /* no dash after */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        trace_ctx c = {.sampled = true};
        cr_assert_eq(trace_parse(bad[i], &c), -EINVAL, "%s", bad[i]);
    }
    trace_ctx c;
    cr_assert_eq(trace_parse(NULL, &c), -EINVAL);
}

static trace_settings settings(const char *sampler, const char *ratio, const char *endpoint)
{
    return (trace_settings){.disabled = "false",
                            .exporter = "zipkin",
                            .endpoint = endpoint,
                            .service = "",
                            .sampler = sampler,
                            .ratio = ratio,
                            .timeout_ms = 2000,
                            .queue = 64,
                            .batch = 16,
                            .delay_ms = 20};
}

/* ratelimiting: every new trace at a human's pace, at most ARG a second
 * under load (a bucket of ARG tokens, refilled as time passes); a sampled
 * parent is still followed, whatever the bucket holds. */
Test(trace, the_rate_limiting_sampler_records_so_many_new_traces_a_second)
{
    tracer *t;
    trace_settings s = settings("parentbased_ratelimiting", "5", "http://127.0.0.1:9/");
    cr_assert_eq(tracer_start(&s, "test", &t), 0);
    trace_span span;
    int recorded = 0;
    for (int i = 0; i < 50; i++) {
        trace_begin(t, &span, NULL, "root", TRACE_SERVER);
        recorded += span.ctx.sampled;
        cr_assert(trace_valid(&span.ctx), "unrecorded, it still has ids to pass on");
        trace_end(t, &span);
    }
    cr_assert_eq(recorded, 5, "a burst of 50: the bucket's 5");
    trace_ctx parent = {.trace_id = {1}, .span_id = {1}, .sampled = true};
    trace_begin(t, &span, &parent, "child", TRACE_SERVER);
    cr_assert(span.ctx.sampled, "a recorded parent is followed");
    trace_end(t, &span);
    /* A token comes back within 1/5 s (and not at once). */
    int64_t t0 = clock_now_us(), waited = 0;
    for (bool again = false; !again && waited < 2000000; waited = clock_now_us() - t0) {
        trace_begin(t, &span, NULL, "root", TRACE_SERVER);
        again = span.ctx.sampled;
        trace_end(t, &span);
        if (!again)
            nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    }
    cr_assert_geq(waited, 150000, "a token back after %lld µs", (long long)waited);
    cr_assert_lt(waited, 2000000, "no token back within 2 s");
    tracer_stop(t);

    s = settings("ratelimiting", "0", "http://127.0.0.1:9/");
    cr_assert_eq(tracer_start(&s, "test", &t), -EINVAL, "0 a second is no rate");
}

Test(trace, the_sampler_decides_by_the_trace_id_and_follows_a_parent)
{
    tracer *t;
    trace_settings s = settings("traceidratio", "0.5", "http://127.0.0.1:9/");
    cr_assert_eq(tracer_start(&s, "test", &t), 0);
    uint8_t low[16] = {0xff}, high[16] = {0};
    memset(high + 8, 0xff, 8);
    cr_assert(tracer_samples(t, low), "its last 8 bytes 0: below any ratio");
    cr_assert_not(tracer_samples(t, high), "its last 8 bytes all ones: above 0.5");
    /* Not parent-based: a parent's flag is not what decides. */
    trace_ctx parent = {.trace_id = {0}, .span_id = {1}, .sampled = false};
    memset(parent.trace_id, 0, 16);
    parent.trace_id[0] = 1;
    trace_span span;
    trace_begin(t, &span, &parent, "x", TRACE_INTERNAL);
    cr_assert(span.ctx.sampled);
    trace_end(t, &span);
    tracer_stop(t);

    s = settings("parentbased_always_off", "", "http://127.0.0.1:9/");
    cr_assert_eq(tracer_start(&s, "test", &t), 0);
    parent.sampled = true;
    trace_begin(t, &span, &parent, "x", TRACE_INTERNAL);
    cr_assert(span.ctx.sampled, "a sampled parent's child is sampled");
    cr_assert_eq(memcmp(span.ctx.trace_id, parent.trace_id, 16), 0);
    cr_assert_eq(memcmp(span.parent_id, parent.span_id, 8), 0);
    trace_end(t, &span);
    trace_begin(t, &span, NULL, "x", TRACE_INTERNAL);
    cr_assert_not(span.ctx.sampled, "a new trace, always_off");
    trace_end(t, &span);
    tracer_stop(t);

    const char *wrong[][2] = {{"sometimes", ""}, {"traceidratio", "1.5"}, {"traceidratio", "x"}};
    for (size_t i = 0; i < 3; i++) {
        s = settings(wrong[i][0], wrong[i][1], "http://127.0.0.1:9/");
        cr_assert_eq(tracer_start(&s, "test", &t), -EINVAL, "%s %s", wrong[i][0], wrong[i][1]);
    }
    s = settings("always_on", "", "");
    s.disabled = "true";
    cr_assert_eq(tracer_start(&s, "test", &t), 0);
    cr_assert_null(t, "OTEL_SDK_DISABLED=true: no tracer");
}

Test(trace, a_span_in_zipkin_v2_json)
{
    trace_span span = {.name = "POST /orders",
                       .kind = TRACE_SERVER,
                       .start_us = 1700000000000000,
                       .duration_us = 1500};
    cr_assert_eq(trace_parse(GOOD, &span.ctx), 0);
    span.ctx.sampled = true;
    trace_tag(&span, "http.request.method", "POST");
    trace_tag_int(&span, "http.response.status_code", 201);
    json_t *j = trace_zipkin(&span, "orders");
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert_str_eq(text, "{\"duration\":1500,\"id\":\"00f067aa0ba902b7\",\"kind\":\"SERVER\","
                           "\"localEndpoint\":{\"serviceName\":\"orders\"},\"name\":\"POST "
                           "/orders\",\"tags\":{\"http.request.method\":\"POST\","
                           "\"http.response.status_code\":\"201\"},\"timestamp\":1700000000000000,"
                           "\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\"}");
    free(text);
    json_decref(j);
    /* A child names its parent. */
    memcpy(span.parent_id, (uint8_t[8]){1, 2, 3, 4, 5, 6, 7, 8}, 8);
    j = trace_zipkin(&span, "orders");
    cr_assert_str_eq(json_string_value(json_object_get(j, "parentId")), "0102030405060708");
    json_decref(j);
    json_decref(span.tags);
}

Test(trace, spans_reach_the_collector_in_batches)
{
    static collector c;
    tracer *t;
    http_server *srv = collecting(&c, &t);
    cr_assert_not_null(srv);
    trace_span root, child;
    trace_begin(t, &root, NULL, "POST /orders", TRACE_SERVER);
    for (int i = 0; i < 20; i++) {
        trace_begin(t, &child, &root.ctx, "group commit", TRACE_INTERNAL);
        trace_tag_int(&child, "shop.group.size", i);
        trace_end(t, &child);
    }
    trace_end(t, &root);
    for (int64_t until = clock_now_ms() + 5000; collected(&c) < 21 && clock_now_ms() < until;)
        usleep(10000);
    cr_assert_eq(collected(&c), 21);
    char trace[33];
    trace_hex(root.ctx.trace_id, 16, trace);
    for (size_t i = 0; i < 21; i++) {
        json_t *sp = json_array_get(c.spans, i);
        cr_assert_str_eq(json_string_value(json_object_get(sp, "traceId")), trace);
        cr_assert_str_eq(
            json_string_value(json_object_get(json_object_get(sp, "localEndpoint"), "serviceName")),
            "orders");
    }
    tracer_stop(t);
    http_stop(srv);
    json_decref(c.spans);
}

Test(trace, an_absent_collector_drops_spans_and_never_holds_a_request)
{
    /* Nothing listens on port 9 of the loopback (discard is not run). */
    trace_settings s = settings("always_on", "", "http://127.0.0.1:9/api/v2/spans");
    s.queue = 4;
    s.delay_ms = 3600000; /* never sent by time: only full batches go */
    tracer *t;
    cr_assert_eq(tracer_start(&s, "orders", &t), 0);
    for (int i = 0; i < 100; i++) {
        trace_span span;
        trace_begin(t, &span, NULL, "x", TRACE_INTERNAL);
        trace_end(t, &span);
    }
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    tracer_metrics(t, out);
    fclose(out);
    cr_assert_not_null(strstr(text, "trace_spans_dropped_total 96"), "%s", text);
    free(text);
    tracer_stop(t);
}

Test(trace, without_a_tracer_a_new_trace_has_no_ids_and_a_parents_goes_on)
{
    trace_span span;
    trace_begin(NULL, &span, NULL, "x", TRACE_SERVER);
    cr_assert_not(trace_valid(&span.ctx));
    cr_assert_not(span.ctx.sampled);
    trace_end(NULL, &span);
    trace_ctx parent;
    cr_assert_eq(trace_parse(GOOD, &parent), 0);
    trace_begin(NULL, &span, &parent, "x", TRACE_SERVER);
    cr_assert(trace_valid(&span.ctx));
    cr_assert_eq(memcmp(span.ctx.trace_id, parent.trace_id, 16), 0);
    cr_assert_neq(memcmp(span.ctx.span_id, parent.span_id, 8), 0, "a span id of its own");
    cr_assert_not(span.ctx.sampled, "never recorded without a tracer");
    trace_end(NULL, &span);
}

/* A handler that answers with the trace it runs in. */
static void traced(http_req *req, http_res *res)
{
    char tp[TRACE_PARENT_LEN + 1];
    trace_format(&req->trace, tp);
    http_json(res, 201, json_pack("{s:s}", "traceparent", tp));
}

static const http_route traced_routes[] = {{"POST", "/orders/{id}", traced, NULL}};

Test(trace, a_request_continues_its_clients_trace_in_a_server_span)
{
    static collector c;
    tracer *t;
    int port;
    http_server *coll = collecting(&c, &t);
    cr_assert_not_null(coll);
    http_server *srv = served_start_traced(traced_routes, 1, NULL, t, &port);
    cr_assert_not_null(srv);

    served_answer a;
    served_request(port, "POST", "/orders/42", "traceparent: " GOOD, &a);
    cr_assert_eq(a.status, 201, "%s", a.body);
    /* The handler ran in a child of the client's span, in its trace. */
    cr_assert_not_null(strstr(a.body, "00-4bf92f3577b34da6a3ce929d0e0e4736-"), "%s", a.body);
    cr_assert_null(strstr(a.body, "00f067aa0ba902b7"), "%s", a.body);
    /* A malformed one starts a new trace. */
    served_request(port, "POST", "/orders/43", "traceparent: 00-nonsense", &a);
    cr_assert_eq(a.status, 201);
    cr_assert_null(strstr(a.body, "4bf92f3577b34da6a3ce929d0e0e4736"), "%s", a.body);

    http_stop(srv);
    tracer_stop(t);
    cr_assert_eq(collected(&c), 2);
    /* Each connection's completion is its own: find them by their path. */
    json_t *sp = json_array_get(c.spans, 0), *other = json_array_get(c.spans, 1);
    if (strcmp(json_string_value(json_object_get(json_object_get(sp, "tags"), "url.path")),
               "/orders/42") != 0) {
        json_t *swap = sp;
        sp = other;
        other = swap;
    }
    cr_assert_str_eq(json_string_value(json_object_get(sp, "traceId")),
                     "4bf92f3577b34da6a3ce929d0e0e4736");
    cr_assert_str_eq(json_string_value(json_object_get(sp, "parentId")), "00f067aa0ba902b7");
    cr_assert_str_eq(json_string_value(json_object_get(sp, "kind")), "SERVER");
    cr_assert_str_eq(json_string_value(json_object_get(sp, "name")), "POST /orders/{id}");
    json_t *tags = json_object_get(sp, "tags");
    cr_assert_str_eq(json_string_value(json_object_get(tags, "http.route")), "/orders/{id}");
    cr_assert_str_eq(json_string_value(json_object_get(tags, "http.response.status_code")), "201");
    cr_assert_str_eq(json_string_value(json_object_get(tags, "url.path")), "/orders/42");
    cr_assert_null(json_object_get(other, "parentId"), "a root");
    http_stop(coll);
    json_decref(c.spans);
}

Test(trace, a_threads_log_lines_carry_its_trace_while_it_works_for_one, .init = cr_redirect_stderr)
{
    trace_ctx c;
    cr_assert_eq(trace_parse(GOOD, &c), 0);
    trace_log_context(&c);
    log_msg(LOG_WARN, NULL, "inside");
    trace_log_context(NULL);
    log_msg(LOG_WARN, NULL, "outside");
    fflush(stderr);
    FILE *err = cr_get_redirected_stderr();
    char inside[512] = "", outside[512] = "";
    cr_assert_not_null(fgets(inside, sizeof inside, err));
    cr_assert_not_null(fgets(outside, sizeof outside, err));
    cr_assert_not_null(strstr(inside, "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""), "%s",
                       inside);
    cr_assert_not_null(strstr(inside, "\"span_id\":\"00f067aa0ba902b7\""), "%s", inside);
    cr_assert_null(strstr(outside, "trace_id"), "%s", outside);
}
