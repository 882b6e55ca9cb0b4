#include "lib/docs.h"
#include "lib/file.h"
#include "lib/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int docs_load(docs *d, const char *spec_path, const char *assets_dir, const char *title)
{
    memset(d, 0, sizeof *d);
    d->spec = file_read(spec_path, &d->spec_len);
    if (!d->spec) {
        int rc = -errno;
        log_msg(LOG_ERROR, NULL, "cannot read the OpenAPI document %s: %s", spec_path,
                strerror(errno));
        return rc;
    }
    d->assets_dir = strdup(assets_dir);
    /* The document's server is ".", resolved against where it was loaded
     * from: this service's root directly, /api/ through the gateway. */
    if (asprintf(&d->index_html,
                 "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 "<title>%s</title><link rel=\"stylesheet\" href=\"swagger-ui.css\"></head>\n"
                 "<body><div id=\"swagger-ui\"></div>\n"
                 "<script src=\"swagger-ui-bundle.js\"></script>\n"
                 "<script>window.ui = SwaggerUIBundle({url: \"../openapi.yaml\", "
                 "dom_id: \"#swagger-ui\", deepLinking: true});</script>\n"
                 "</body></html>\n",
                 title) < 0)
        d->index_html = NULL;
    return 0;
}

void docs_free(docs *d)
{
    free(d->spec);
    free(d->index_html);
    free(d->assets_dir);
    memset(d, 0, sizeof *d);
}

const char *docs_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},   {".png", "image/png"},
        {".map", "application/json"},          {".json", "application/json"},
        {".yaml", "application/yaml"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof *types; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

static void serve_spec(http_req *req, http_res *res)
{
    const docs *d = req->ctx;
    if (!(res->raw = malloc(d->spec_len))) {
        http_error(res, 503, "out_of_memory", "no memory to answer; retry");
        return;
    }
    res->status = 200;
    memcpy(res->raw, d->spec, d->spec_len);
    res->raw_len = d->spec_len;
    res->content_type = "application/yaml";
}

static void serve_index(http_req *req, http_res *res)
{
    const docs *d = req->ctx;
    res->status = 200;
    res->raw = strdup(d->index_html);
    res->raw_len = strlen(d->index_html);
    res->content_type = "text/html; charset=utf-8";
}

static void redirect_to_index(http_req *req, http_res *res)
{
    (void)req;
    res->status = 301;
    http_add_header(res, "Location", "/docs/");
    http_json(res, 301, json_pack("{s:s}", "location", "/docs/"));
}

static void serve_asset(http_req *req, http_res *res)
{
    const docs *d = req->ctx;
    const char *name = req->params[0];
    if (strcmp(name, "index.html") == 0) {
        serve_index(req, res);
        return;
    }
    /* swagger-ui-dist is one flat folder: a plain file name or nothing. */
    if (name[0] == '.' || strchr(name, '/') || strchr(name, '\\')) {
        http_error(res, 404, "not_found", "no such file");
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", d->assets_dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        if (access(d->assets_dir, R_OK) != 0)
            http_error(res, 503, "docs_unavailable",
                       "Swagger UI assets are missing from %s: run make build", d->assets_dir);
        else
            http_error(res, 404, "not_found", "no such file");
        return;
    }
    res->status = 200;
    res->fd = fd;
    res->fd_size = (size_t)st.st_size;
    res->content_type = docs_content_type(name);
}

void docs_routes(const docs *d, http_route *out)
{
    out[0] = (http_route){"GET", "/openapi.yaml", serve_spec, d};
    out[1] = (http_route){"GET", "/docs", redirect_to_index, d};
    out[2] = (http_route){"GET", "/docs/", serve_index, d};
    out[3] = (http_route){"GET", "/docs/{file}", serve_asset, d};
}

static const cfg_setting docs_settings_list[] = {
    CFG_S("SWAGGER_UI_DIR", docs_settings, assets, "node_modules/swagger-ui-dist",
          "Swagger UI's assets, served at /docs/"),
};
const cfg_table docs_settings_table = CFG_TABLE("docs", docs_settings_list);
