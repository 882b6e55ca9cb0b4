#include "lib/ticker.h"
#include "lib/clock.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

struct ticker {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    int period_ms;
    void (*fn)(void *);
    void *arg;
};

static void *ticker_main(void *arg)
{
    pthread_setname_np(pthread_self(), "ticker"); /* for top -H, perf, pidstat -t */
    ticker *t = arg;
    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        struct timespec until = clock_deadline(t->period_ms);
        while (!t->stopping && pthread_cond_timedwait(&t->cond, &t->lock, &until) == 0)
            ;
        if (t->stopping)
            break;
        pthread_mutex_unlock(&t->lock);
        t->fn(t->arg);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

ticker *ticker_start(int period_ms, void (*fn)(void *arg), void *arg)
{
    ticker *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    *t = (ticker){.period_ms = period_ms, .fn = fn, .arg = arg};
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

void ticker_stop(ticker *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    free(t);
}
