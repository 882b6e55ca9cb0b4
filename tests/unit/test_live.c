/* The live-status batch: one line per order change, grown as needed. */
#include "orders/live.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static order an_order(const char *user, size_t description_len)
{
    order o = {.amount = 1, .seq = 1};
    snprintf(o.id, sizeof o.id, "00000000-0000-4000-8000-000000000000");
    snprintf(o.user_id, sizeof o.user_id, "%s", user);
    memset(o.description, 'd', description_len);
    o.description[description_len] = '\0';
    snprintf(o.status, sizeof o.status, "FINISHED");
    snprintf(o.created_at, sizeof o.created_at, "2026-11-26T00:00:00.000Z");
    snprintf(o.updated_at, sizeof o.updated_at, "2026-11-26T00:00:00.000Z");
    return o;
}

/* The length of the line an order makes. */
static size_t line_len(const order *o)
{
    live_batch scratch = {0};
    cr_assert_eq(live_batch_add(&scratch, o, NULL), 0);
    size_t n = scratch.len;
    live_batch_free(&scratch);
    return n;
}

/* A line that fills the buffer to the last byte used to leave no room for
 * the NUL that sprintf writes after it: one byte past the heap block
 * (AddressSanitizer reports it; the unit tests run under it). */
Test(live, a_line_that_fills_the_buffer_exactly_stays_inside_it)
{
    live_batch b = {0};
    order first = an_order("alice", 100);
    cr_assert_eq(live_batch_add(&b, &first, NULL), 0);
    while (b.cap - b.len > 600) {
        cr_assert_eq(live_batch_add(&b, &first, NULL), 0);
    }
    size_t room = b.cap - b.len, cap = b.cap;
    /* The description length whose line takes exactly the room left. */
    size_t d = 0;
    order last;
    for (; d < 500; d++) {
        last = an_order("alice", d);
        if (line_len(&last) == room)
            break;
    }
    cr_assert_lt(d, 500, "no description length fills %zu bytes", room);
    cr_assert_eq(live_batch_add(&b, &last, NULL), 0);
    cr_assert_eq(b.len, cap, "the lines fill the old capacity exactly");
    cr_assert_gt(b.cap, b.len, "room for the terminating NUL");
    cr_assert_eq(b.items[b.len - 1], '\n');
    live_batch_free(&b);
}

/* Each event names its order and the context of the message that changed
 * it, for the push's span on whichever instance pushes it; "" for none. */
Test(live, a_line_names_its_user_order_and_trace)
{
    live_batch b = {0};
    order o = an_order("alice", 3);
    trace_ctx ctx;
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    cr_assert_eq(trace_parse(tp, &ctx), 0);
    cr_assert_eq(live_batch_add(&b, &o, &ctx), 0);
    cr_assert_eq(live_batch_add(&b, &o, NULL), 0);
    char want[256];
    snprintf(want, sizeof want, "alice\t%s\t%s\t{\"type\":\"order.updated\"", o.id, tp);
    cr_assert_eq(strncmp(b.items, want, strlen(want)), 0, "%s", b.items);
    const char *second = strchr(b.items, '\n') + 1;
    snprintf(want, sizeof want, "alice\t%s\t\t{\"type\":\"order.updated\"", o.id);
    cr_assert_eq(strncmp(second, want, strlen(want)), 0, "%s", second);
    live_batch_free(&b);
}
