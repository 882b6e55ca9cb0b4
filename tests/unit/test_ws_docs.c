/* Pure helpers of the WebSocket hub, the docs module and order ids. */
#include "lib/docs.h"
#include "lib/msg.h"
#include "lib/ws.h"
#include "orders/order.h"

#include <criterion/criterion.h>
#include <string.h>

Test(ws, accept_key_is_the_rfc_6455_example)
{
    char accept[32];
    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept);
    cr_assert_str_eq(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

Test(docs, content_types_by_extension)
{
    cr_assert_str_eq(docs_content_type("swagger-ui-bundle.js"), "text/javascript; charset=utf-8");
    cr_assert_str_eq(docs_content_type("swagger-ui.css"), "text/css; charset=utf-8");
    cr_assert_str_eq(docs_content_type("index.html"), "text/html; charset=utf-8");
    cr_assert_str_eq(docs_content_type("favicon-32x32.png"), "image/png");
    cr_assert_str_eq(docs_content_type("LICENSE"), "application/octet-stream");
}

Test(order, new_ids_are_distinct_version_4_uuids)
{
    char a[37], b[37];
    order_new_id(a);
    order_new_id(b);
    cr_assert(valid_uuid(a), "%s", a);
    cr_assert_eq(a[14], '4', "version 4: %s", a);
    cr_assert(strchr("89ab", a[19]) != NULL, "RFC 4122 variant: %s", a);
    cr_assert_str_neq(a, b);
}
