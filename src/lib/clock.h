/* Time helpers for timeouts and back-offs. */
#ifndef SHOP_CLOCK_H
#define SHOP_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on the monotonic clock: for measuring intervals. */
int64_t clock_now_ms(void);

/* Microseconds on the monotonic clock. */
int64_t clock_now_us(void);

/* Seconds since the epoch (wall clock): for token lifetimes. */
int64_t clock_wall_s(void);

/* Milliseconds since the epoch (wall clock): to compare with the
 * database's timestamps. */
int64_t clock_wall_ms(void);

/* The CLOCK_REALTIME instant `ms` from now, as pthread_cond_timedwait
 * wants its deadline. */
struct timespec clock_deadline(int64_t ms);

#endif
