/* API documentation a service serves about itself: its OpenAPI document at
 * /openapi.yaml and Swagger UI at /docs/, whose assets come from the npm
 * package swagger-ui-dist (installed by the build, never committed). */
#ifndef SHOP_DOCS_H
#define SHOP_DOCS_H

#include "lib/config.h"
#include "lib/http.h"

typedef struct docs {
    char *spec; /* the OpenAPI document, YAML */
    size_t spec_len;
    char *index_html;
    char *assets_dir;
} docs;

/* Reads the document at `spec_path`. `assets_dir` is swagger-ui-dist's
 * folder. Returns 0, or -errno (logged) when the document cannot be read.
 * Missing assets are not an error: /docs/ then answers 503 saying so. */
int docs_load(docs *d, const char *spec_path, const char *assets_dir, const char *title);
void docs_free(docs *d);

/* Writes the docs routes into `out` (room for DOCS_NROUTES); each carries
 * `d` as its context, borrowed for the server's life. */
#define DOCS_NROUTES 4
void docs_routes(const docs *d, http_route *out);

/* The Content-Type of a file name, by its extension. Pure. */
const char *docs_content_type(const char *name);

typedef struct docs_settings {
    const char *assets; /* SWAGGER_UI_DIR */
} docs_settings;
extern const cfg_table docs_settings_table;

#endif
