/* A thread that calls a function every `period_ms` until stopped: the
 * re-drive and the purges run on one each. */
#ifndef SHOP_TICKER_H
#define SHOP_TICKER_H

typedef struct ticker ticker;

/* `fn(arg)` runs on the ticker's thread; `arg` is borrowed. NULL on error. */
ticker *ticker_start(int period_ms, void (*fn)(void *arg), void *arg);

/* Waits for a running call to finish, then frees. NULL-safe. */
void ticker_stop(ticker *t);

#endif
