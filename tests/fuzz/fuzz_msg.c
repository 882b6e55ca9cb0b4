/* libFuzzer: the Kafka message parser, both directions, on any bytes. A
 * message that decodes must encode and decode again to the same thing. */
#include "lib/msg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    payment_msg m, again;
    char why[256];
    if (msg_decode(data, size, &m, why, sizeof why) != 0) {
        if (!memchr(why, '\0', sizeof why) || why[0] == '\0')
            __builtin_trap(); /* every refusal says why */
        return 0;
    }
    char *text = msg_encode(&m);
    if (!text)
        return 0;
    if (msg_decode(text, strlen(text), &again, why, sizeof why) != 0 || again.type != m.type ||
        strcmp(again.order_id, m.order_id) != 0 || strcmp(again.user_id, m.user_id) != 0 ||
        again.amount != m.amount || strcmp(again.reason, m.reason) != 0)
        __builtin_trap();
    free(text);
    return 0;
}
