/* The group commit's queue (lib/group.h) around real suspended requests of
 * our HTTP layer, with a run function of the test's own: every request is
 * answered once, groups stay within their bound, and a request past its
 * deadline is answered and never run. */
#include "lib/group.h"
#include "lib/clock.h"
#include "served.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

typedef struct fixture {
    group *g;
    _Atomic int runs, items_run, largest, expired;
    bool hold_first; /* the first run waits until an item expired */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool released;
} fixture;

static void run(void *arg, group_item **items, int n)
{
    fixture *f = arg;
    if (atomic_fetch_add(&f->runs, 1) == 0 && f->hold_first) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        pthread_mutex_lock(&f->lock);
        while (!f->released && pthread_cond_timedwait(&f->cond, &f->lock, &until) == 0)
            ;
        pthread_mutex_unlock(&f->lock);
    }
    atomic_fetch_add(&f->items_run, n);
    for (int seen = atomic_load(&f->largest);
         n > seen && !atomic_compare_exchange_weak(&f->largest, &seen, n);)
        ;
    for (int i = 0; i < n; i++)
        http_json(&items[i]->res, 201, json_pack("{s:i}", "group", n));
}

static void expire(void *arg, group_item *item)
{
    fixture *f = arg;
    http_error(&item->res, 503, "not_created", "waited past its deadline");
    atomic_fetch_add(&f->expired, 1);
    pthread_mutex_lock(&f->lock);
    f->released = true;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static void submit(http_req *req, http_res *res)
{
    fixture *f = req->app;
    group_item *it = calloc(1, sizeof *it);
    if (!group_submit(f->g, req, it)) {
        free(it);
        http_error(res, 503, "shutting_down", "stopping");
    }
}

static const http_route routes[] = {{"POST", "/submit", submit, NULL}};

static http_server *serve(fixture *f, group_config cfg, int *port)
{
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    cfg.run = run;
    cfg.expire = expire;
    cfg.app = f;
    f->g = group_start(&cfg);
    cr_assert_not_null(f->g);
    http_server *srv = served_start(routes, 1, f, port);
    cr_assert_not_null(srv);
    return srv;
}

Test(group, every_request_is_answered_once_in_groups_within_their_bound)
{
    static fixture f;
    int port;
    http_server *srv =
        serve(&f, (group_config){.name = "t", .writers = 1, .max = 4, .gather_us = 2000}, &port);
    enum { N = 40 };
    static served_answer a[N];
    served_many(port, "POST", "/submit", N, a);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(a[i].status, 201, "request %d: %ld %s", i, a[i].status, a[i].body);
        cr_assert_not_null(strstr(a[i].body, "\"group\""));
    }
    cr_assert_eq(atomic_load(&f.items_run), N, "each request ran once");
    cr_assert_leq(atomic_load(&f.largest), 4, "a group holds at most max");
    cr_assert_geq(atomic_load(&f.runs), N / 4);
    http_stop(srv);
    group_stop(f.g);
    group_free(f.g);
}

typedef struct in_thread {
    int port;
    served_answer answer;
} in_thread;

static void *post_submit(void *arg)
{
    in_thread *t = arg;
    served_request(t->port, "POST", "/submit", NULL, &t->answer);
    return NULL;
}

Test(group, a_request_past_its_deadline_is_answered_and_never_run)
{
    static fixture f = {.hold_first = true};
    int port;
    http_server *srv =
        serve(&f, (group_config){.name = "t", .writers = 1, .max = 8, .deadline_ms = 300}, &port);
    /* The first request's group holds the only writer until the second
     * has waited past its deadline in the queue. */
    static in_thread first;
    first.port = port;
    pthread_t t;
    pthread_create(&t, NULL, post_submit, &first);
    for (int64_t until = clock_now_ms() + 5000; !atomic_load(&f.runs) && clock_now_ms() < until;)
        usleep(1000);
    cr_assert_eq(atomic_load(&f.runs), 1, "the first request is running");
    served_answer second;
    served_request(port, "POST", "/submit", NULL, &second);
    pthread_join(t, NULL);
    cr_assert_eq(second.status, 503, "%ld %s", second.status, second.body);
    cr_assert_not_null(strstr(second.body, "not_created"), "%s", second.body);
    cr_assert_eq(first.answer.status, 201, "%ld %s", first.answer.status, first.answer.body);
    http_stop(srv);
    group_stop(f.g);
    group_free(f.g);
    cr_assert_eq(atomic_load(&f.expired), 1);
    cr_assert_eq(atomic_load(&f.items_run), 1, "the expired request never ran");
    cr_assert_eq(atomic_load(&f.runs), 1);
}

Test(group, the_deadline_of_a_group_is_its_earliest)
{
    group_item a = {.deadline_ms = 500}, b = {.deadline_ms = 0}, c = {.deadline_ms = 300};
    group_item *items[] = {&a, &b, &c};
    cr_assert_eq(group_deadline(items, 3), 300);
    cr_assert_eq(group_deadline(items + 1, 1), 0, "none: no deadline");
    cr_assert_eq(group_deadline(items, 0), 0);
}

Test(group, each_request_gets_its_wait_and_its_group_in_its_own_trace)
{
    static collector c;
    static fixture f;
    tracer *t;
    http_server *coll = collecting(&c, &t);
    cr_assert_not_null(coll);
    pthread_mutex_init(&f.lock, NULL);
    pthread_cond_init(&f.cond, NULL);
    group_config cfg = {.name = "orders",
                        .writers = 1,
                        .max = 8,
                        .gather_us = 2000,
                        .traces = t,
                        .run = run,
                        .expire = expire,
                        .app = &f};
    cr_assert_not_null(f.g = group_start(&cfg));
    int port;
    http_server *srv = served_start_traced(routes, 1, &f, t, &port);
    cr_assert_not_null(srv);
    enum { N = 6 };
    static served_answer a[N];
    served_many(port, "POST", "/submit", N, a);
    for (int i = 0; i < N; i++)
        cr_assert_eq(a[i].status, 201);
    http_stop(srv);
    group_stop(f.g);
    group_free(f.g);
    tracer_stop(t); /* sends what is queued */
    http_stop(coll);
    /* Per request: its server span, its wait and its group, one trace. */
    cr_assert_eq(collected(&c), 3 * N, "%zu spans", collected(&c));
    for (size_t i = 0; i < 3 * N; i++) {
        json_t *sp = json_array_get(c.spans, i);
        const char *name = json_string_value(json_object_get(sp, "name"));
        if (strcmp(name, "POST /submit") == 0)
            continue;
        cr_assert(strcmp(name, "orders wait") == 0 || strcmp(name, "orders group") == 0, "%s",
                  name);
        /* Its parent is a server span of the same trace. */
        const char *parent = json_string_value(json_object_get(sp, "parentId"));
        const char *trace = json_string_value(json_object_get(sp, "traceId"));
        bool found = false;
        for (size_t k = 0; !found && k < 3 * N; k++) {
            json_t *p = json_array_get(c.spans, k);
            found = strcmp(json_string_value(json_object_get(p, "id")), parent) == 0 &&
                    strcmp(json_string_value(json_object_get(p, "traceId")), trace) == 0 &&
                    strcmp(json_string_value(json_object_get(p, "name")), "POST /submit") == 0;
        }
        cr_assert(found, "%s has no server span for a parent", name);
        if (strcmp(name, "orders group") == 0)
            cr_assert_not_null(json_object_get(json_object_get(sp, "tags"), "shop.group.size"));
    }
    json_decref(c.spans);
}
