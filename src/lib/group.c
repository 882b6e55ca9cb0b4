#include "lib/group.h"
#include "lib/clock.h"
#include "lib/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct group {
    group_config cfg;
    pthread_mutex_t lock;
    pthread_cond_t work;
    pthread_cond_t queued; /* the reaper's sleep; signalled at stop */
    pthread_t reaper;
    bool reaping;
    group_item *head, *tail; /* waiting, oldest first; under lock */
    int waiting;             /* under lock */
    int writing;             /* taken by writers, not yet answered; under lock */
    int gathering;           /* writers waiting out a gather; under lock */
    bool stopping;           /* under lock */
    pthread_t *threads;
    int nthreads;
    _Atomic uint64_t commits, requests, largest, gathers, expired;
};

/* CLOCK_MONOTONIC now plus `us` microseconds, for a timed wait on the
 * group's conditions. */
static struct timespec monotonic_in(int64_t us)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += us / 1000000;
    t.tv_nsec += (us % 1000000) * 1000;
    t.tv_sec += t.tv_nsec / 1000000000;
    t.tv_nsec %= 1000000000;
    return t;
}

int64_t group_deadline(group_item *const *items, int n)
{
    int64_t first = 0;
    for (int i = 0; i < n; i++)
        if (items[i]->deadline_ms && (!first || items[i]->deadline_ms < first))
            first = items[i]->deadline_ms;
    return first;
}

/* Answers the items of a list taken out of the queue past their deadline,
 * and frees them. Not under the lock. */
static void answer_expired(group *g, group_item *list)
{
    while (list) {
        group_item *next = list->next;
        trace_tag(&list->wait, "error", "past its deadline: never run");
        trace_end(g->cfg.traces, &list->wait);
        if (g->cfg.expire)
            g->cfg.expire(g->cfg.app, list);
        else
            http_error(&list->res, 503, "timed_out", "not done in time; retry");
        http_resume(list->pending, &list->res);
        free(list);
        atomic_fetch_add(&g->expired, 1);
        list = next;
    }
}

/* Takes the items at the queue's head whose deadline is `now` or before
 * (the queue is in arrival order, so in deadline order): returns them as a
 * list. Under the lock. */
static group_item *take_expired(group *g, int64_t now)
{
    group_item *out = NULL, **tail = &out;
    while (g->head && g->head->deadline_ms && g->head->deadline_ms <= now) {
        group_item *it = g->head;
        g->head = it->next;
        g->waiting--;
        it->next = NULL;
        *tail = it;
        tail = &it->next;
    }
    if (!g->head)
        g->tail = NULL;
    return out;
}

/* The reaper: answers what has waited past its deadline, whatever the
 * writers are doing (all of them may be stuck in a transaction behind a
 * lock). It looks at the queue's head at its deadline, and at least every
 * REAP_EVERY_MS: an arrival never wakes it (one wake-up a group would
 * cost a context switch each), so a request is answered at most that much
 * after its deadline. */
#define REAP_EVERY_MS 100

static void *reaper_main(void *arg)
{
    pthread_setname_np(pthread_self(), "reaper");
    group *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stopping) {
        int64_t now = clock_now_ms();
        group_item *late = take_expired(g, now);
        if (late) {
            pthread_mutex_unlock(&g->lock);
            answer_expired(g, late);
            pthread_mutex_lock(&g->lock);
            continue;
        }
        int64_t wait_ms = g->head ? g->head->deadline_ms - now : REAP_EVERY_MS;
        if (wait_ms > REAP_EVERY_MS)
            wait_ms = REAP_EVERY_MS;
        struct timespec until = monotonic_in(wait_ms * 1000);
        pthread_cond_timedwait(&g->queued, &g->lock, &until);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/* Takes up to cfg.max waiting items into items[] (and those past their
 * deadline into *late); waits for one unless stopping. After the last group had company (`busy`:
 * the service is under load), it waits up to cfg.gather_us more for others to join: fewer, larger
 * transactions. A lone request at light load goes at once. Returns how many
 * (0: stopping and nothing left). */
static int take_some(group *g, group_item **items, bool busy, group_item **late)
{
    pthread_mutex_lock(&g->lock);
    for (;;) {
        while (!g->head && !g->stopping)
            pthread_cond_wait(&g->work, &g->lock);
        if (!busy || g->cfg.gather_us == 0 || g->stopping || g->waiting >= g->cfg.max)
            break;
        atomic_fetch_add(&g->gathers, 1);
        struct timespec until = monotonic_in(g->cfg.gather_us);
        g->gathering++;
        while (!g->stopping && g->waiting < g->cfg.max &&
               pthread_cond_timedwait(&g->work, &g->lock, &until) == 0)
            ;
        g->gathering--;
        if (g->head || g->stopping)
            break;
        /* Another writer took them all meanwhile (the lock is let go while
         * waiting): wait for the next, without a gather, as it carries the
         * load now. Returning none would end this writer. */
        busy = false;
    }
    /* What waited past its deadline is not run: the reaper may not have
     * got to it yet. */
    *late = take_expired(g, clock_now_ms());
    int n = 0;
    for (; g->head && n < g->cfg.max; n++) {
        items[n] = g->head;
        g->head = g->head->next;
    }
    if (!g->head)
        g->tail = NULL;
    g->waiting -= n;
    g->writing += n;
    pthread_mutex_unlock(&g->lock);
    return n;
}

/* take_some, answering what it found past its deadline; none taken only
 * when stopping with nothing left (a writer ends then). */
static int take(group *g, group_item **items, bool busy)
{
    for (;;) {
        group_item *late = NULL;
        int n = take_some(g, items, busy, &late);
        answer_expired(g, late);
        if (n > 0 || !late)
            return n;
    }
}

static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "writer"); /* for top -H, perf, pidstat -t */
    group *g = arg;
    group_item **items = calloc((size_t)g->cfg.max, sizeof *items);
    trace_span *spans = g->cfg.traces ? calloc((size_t)g->cfg.max, sizeof *spans) : NULL;
    char name[80];
    snprintf(name, sizeof name, "%s group", g->cfg.name);
    for (int n = 0; items && (n = take(g, items, n > 1)) > 0;) {
        for (int i = 0; spans && i < n; i++) {
            trace_end(g->cfg.traces, &items[i]->wait);
            spans[i] = (trace_span){0};
            if (trace_valid(&items[i]->trace)) {
                trace_begin(g->cfg.traces, &spans[i], &items[i]->trace, name, TRACE_INTERNAL);
                trace_tag_int(&spans[i], "shop.group.size", n);
            }
        }
        g->cfg.run(g->cfg.app, items, n);
        for (int i = 0; spans && i < n; i++) {
            trace_tag_int(&spans[i], "http.response.status_code", items[i]->res.status);
            if (items[i]->res.tag.key)
                trace_tag(&spans[i], items[i]->res.tag.key, items[i]->res.tag.value);
            trace_end(g->cfg.traces, &spans[i]);
        }
        atomic_fetch_add(&g->commits, 1);
        atomic_fetch_add(&g->requests, (uint64_t)n);
        for (uint64_t top = atomic_load(&g->largest);
             (uint64_t)n > top && !atomic_compare_exchange_weak(&g->largest, &top, (uint64_t)n);)
            ;
        for (int i = 0; i < n; i++) {
            http_resume(items[i]->pending, &items[i]->res);
            free(items[i]);
        }
        pthread_mutex_lock(&g->lock);
        g->writing -= n;
        pthread_mutex_unlock(&g->lock);
    }
    free(items);
    free(spans);
    return NULL;
}

group *group_start(const group_config *cfg)
{
    group *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->cfg = *cfg;
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t monotonic; /* the gather's deadline ignores clock steps */
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&g->work, &monotonic);
    pthread_cond_init(&g->queued, &monotonic);
    pthread_condattr_destroy(&monotonic);
    g->threads = calloc((size_t)cfg->writers, sizeof *g->threads);
    for (; g->threads && g->nthreads < cfg->writers; g->nthreads++)
        if (pthread_create(&g->threads[g->nthreads], NULL, writer_main, g) != 0)
            break;
    if (g->nthreads == cfg->writers && cfg->deadline_ms > 0)
        g->reaping = pthread_create(&g->reaper, NULL, reaper_main, g) == 0;
    if (g->nthreads < cfg->writers || (cfg->deadline_ms > 0 && !g->reaping)) {
        group_free(g);
        return NULL;
    }
    return g;
}

bool group_submit(group *g, http_req *req, group_item *item)
{
    pthread_mutex_lock(&g->lock);
    bool open = !g->stopping;
    if (open) {
        /* Suspended under the lock: a writer can take (and answer) the
         * item only after, and group_stop cannot miss it. */
        item->pending = http_suspend(req);
        item->next = NULL;
        item->trace = req->trace;
        item->wait = (trace_span){0};
        if (g->cfg.traces && trace_valid(&req->trace)) {
            char name[80];
            snprintf(name, sizeof name, "%s wait", g->cfg.name);
            trace_begin(g->cfg.traces, &item->wait, &req->trace, name, TRACE_INTERNAL);
            if (item->res.tag.key)
                trace_tag(&item->wait, item->res.tag.key, item->res.tag.value);
        }
        item->deadline_ms = g->cfg.deadline_ms > 0 ? clock_now_ms() + g->cfg.deadline_ms : 0;
        if (g->tail)
            g->tail->next = item;
        else
            g->head = item;
        g->tail = item;
        g->waiting++;
        /* A writer that gathers takes this one at its deadline; waking it
         * for each arrival only costs a context switch apiece (grouped
         * reads: 101 against 86 µs of CPU a read, bench/README.md). It is
         * woken when the group is full. */
        if (!g->gathering || g->waiting >= g->cfg.max)
            pthread_cond_signal(&g->work);
    }
    pthread_mutex_unlock(&g->lock);
    return open;
}

void group_stop(group *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    g->stopping = true;
    pthread_cond_broadcast(&g->work);
    pthread_cond_broadcast(&g->queued);
    pthread_mutex_unlock(&g->lock);
    for (int i = 0; i < g->nthreads; i++)
        pthread_join(g->threads[i], NULL); /* each leaves when nothing waits */
    g->nthreads = 0;
    if (g->reaping)
        pthread_join(g->reaper, NULL);
    g->reaping = false;
}

void group_free(group *g)
{
    if (!g)
        return;
    group_stop(g);
    free(g->threads);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->work);
    pthread_cond_destroy(&g->queued);
    free(g);
}

void group_metrics(group *const *groups, int n, FILE *out)
{
    static const struct {
        const char *name, *type, *help;
    } series[] = {
        {"group_commits_total", "counter",
         "Group transactions committed or failed (a read group: statements run)"},
        {"group_requests_total", "counter", "Requests carried by group transactions"},
        {"group_largest", "gauge", "Most requests one group transaction carried"},
        {"group_gathers_total", "counter",
         "Times a writer under load waited for more requests before its transaction"},
        {"group_expired_total", "counter",
         "Requests answered unrun because they waited past their deadline"},
        {"group_writers", "gauge", "Writer threads, each one transaction at a time"},
        {"group_waiting", "gauge", "Requests waiting for a writer now"},
        {"group_writing", "gauge", "Requests in a writer's transaction now"},
    };
    enum { NSERIES = sizeof series / sizeof *series };
    /* Each group's values at once (in the order of `series`), then each
     * series' HELP and TYPE once, with a line per group. */
    int64_t(*values)[NSERIES] = calloc((size_t)(n > 0 ? n : 1), sizeof *values);
    if (!values)
        return;
    for (int i = 0; i < n; i++) {
        group *g = groups[i];
        if (!g)
            continue;
        pthread_mutex_lock(&g->lock);
        int64_t v[NSERIES] = {(int64_t)atomic_load(&g->commits),
                              (int64_t)atomic_load(&g->requests),
                              (int64_t)atomic_load(&g->largest),
                              (int64_t)atomic_load(&g->gathers),
                              (int64_t)atomic_load(&g->expired),
                              g->cfg.writers,
                              g->waiting,
                              g->writing};
        pthread_mutex_unlock(&g->lock);
        memcpy(values[i], v, sizeof v);
    }
    for (int s = 0; s < NSERIES; s++) {
        metrics_header(out, series[s].name, series[s].type, series[s].help);
        for (int i = 0; i < n; i++)
            if (groups[i])
                fprintf(out, "%s{group=\"%s\"} %" PRId64 "\n", series[s].name, groups[i]->cfg.name,
                        values[i][s]);
    }
    free(values);
}
