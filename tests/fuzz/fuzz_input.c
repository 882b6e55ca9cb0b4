/* libFuzzer: the small parsers an outsider's bytes reach before any
 * database: user ids, order ids (UUIDs), Idempotency-Keys, request ids,
 * integers of the query string (limit, cursor), descriptions, the UTF-8
 * repair of echoed text, the router's path matching against every route
 * pattern of both services, an Idempotency-Key's fingerprint of a body,
 * and a W3C traceparent. Checks what each promises. */
#include "lib/config.h"
#include "lib/http.h"
#include "lib/idem.h"
#include "lib/trace.h"
#include "lib/valid.h"
#include "orders/order.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const patterns[] = {
    "/orders",       "/orders/{id}",        "/ws",
    "/accounts",     "/accounts/{user_id}", "/accounts/{user_id}/deposits",
    "/openapi.yaml", "/docs/{file}",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t len = strlen(s); /* up to the first NUL, as C strings from HTTP */

    if (valid_user_id(s)) /* 1-64 of [A-Za-z0-9_.-] */
        if (len < 1 || len > 64 ||
            strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789_.-") != len)
            __builtin_trap();
    if (valid_uuid(s) && len != 36)
        __builtin_trap();
    if (valid_idempotency_key(s))
        for (size_t i = 0; i < len; i++)
            if (s[i] <= ' ' || s[i] > '~')
                __builtin_trap();
    if (http_request_id_valid(s) && (len < 1 || len > HTTP_REQ_ID_MAX))
        __builtin_trap();
    int64_t v;
    if (cfg_parse_int(s, 1, 100, &v) == 0 && (v < 1 || v > 100))
        __builtin_trap();
    if (cfg_parse_int(s, 1, INT64_MAX, &v) == 0 && v < 1)
        __builtin_trap();
    (void)order_description_valid(s, size); /* NUL-terminated, NULs inside */

    /* A traceparent read is written back as its version-00 self: the same
     * text, when it was one (its flags' other bits aside). */
    trace_ctx tc;
    if (trace_parse(s, &tc) == 0) {
        char again[TRACE_PARENT_LEN + 1];
        trace_format(&tc, again);
        trace_ctx tc2;
        if (trace_parse(again, &tc2) != 0 || memcmp(&tc, &tc2, sizeof tc) != 0)
            __builtin_trap();
        if (strncmp(s, "00-", 3) == 0 && strncmp(s, again, 53) != 0)
            __builtin_trap();
    }

    for (size_t i = 0; i < sizeof patterns / sizeof *patterns; i++) {
        char buf[512];
        const char *params[HTTP_MAX_PARAMS];
        int n = http_match(patterns[i], s, buf, sizeof buf, params, HTTP_MAX_PARAMS);
        for (int k = 0; k < n; k++) /* each parameter is one non-empty segment */
            if (params[k][0] == '\0' || strchr(params[k], '/'))
                __builtin_trap();
    }

    /* The fingerprint of a JSON body is canonical: the same members in
     * another order (jansson's own output, unsorted) give the same one. */
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (body) {
        http_req req = {.method = "POST",
                        .path = "/orders",
                        .body = (const char *)data,
                        .body_len = size,
                        .json = body};
        char *fp = idem_fingerprint(&req);
        char *again_text = json_dumps(body, JSON_INDENT(1) | JSON_ENCODE_ANY);
        json_t *again = again_text ? json_loads(again_text, 0, NULL) : NULL;
        req.json = again;
        char *fp2 = again ? idem_fingerprint(&req) : NULL;
        if (fp && fp2 && strcmp(fp, fp2) != 0)
            __builtin_trap();
        json_t *probe = fp ? json_string(fp) : NULL; /* UTF-8, as convert_to wants */
        if (fp && !probe)
            __builtin_trap();
        json_decref(probe);
        free(fp), free(fp2), free(again_text);
        json_decref(again);
        json_decref(body);
    }

    /* After the repair, the text is UTF-8 that jansson accepts. */
    valid_utf8_repair(s);
    json_t *j = json_string(s);
    if (!j)
        __builtin_trap();
    json_decref(j);
    free(s);
    return 0;
}
