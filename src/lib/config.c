#include "lib/config.h"
#include "lib/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

const char *cfg_str(const char *name, const char *def)
{
    const char *v = getenv(name);
    return (v && *v) ? v : def;
}

int cfg_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0')
        return -EINVAL;
    if (errno == ERANGE || v < min || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

int cfg_load(const cfg_table *t, void *values)
{
    int rc = 0;
    for (size_t i = 0; i < t->n; i++) {
        const cfg_setting *s = &t->settings[i];
        void *at = (char *)values + s->offset;
        const char *v = cfg_str(s->name, NULL);
        if (s->type == CFG_STR) {
            *(const char **)at = v ? v : s->text;
            continue;
        }
        int64_t *n = at;
        *n = s->def;
        int bad = v ? cfg_parse_int(v, s->min, s->max, n) : 0;
        if (bad < 0) {
            log_msg(LOG_ERROR, NULL,
                    "setting %s=%s is not an integer in [%" PRId64 ", %" PRId64 "]", s->name, v,
                    s->min, s->max);
            rc = rc ? rc : bad;
        }
    }
    return rc;
}

void cfg_print_help(FILE *out, const cfg_table *const *tables, int tsv)
{
    for (const cfg_table *const *t = tables; *t; t++)
        for (size_t i = 0; i < (*t)->n; i++) {
            const cfg_setting *s = &(*t)->settings[i];
            char def[128], range[64] = "";
            if (s->type == CFG_STR)
                snprintf(def, sizeof def, "%s", s->text && *s->text ? s->text : "(unset)");
            else if (s->text)
                snprintf(def, sizeof def, "%s", s->text);
            else
                snprintf(def, sizeof def, "%" PRId64, s->def);
            if (s->type == CFG_INT)
                snprintf(range, sizeof range, "%" PRId64 "-%" PRId64, s->min, s->max);
            if (tsv)
                fprintf(out, "%s\t%s\t%s\t%s\t%s\n", s->name, def, range, (*t)->module, s->help);
            else
                fprintf(out, "  %-28s %s%s%s (default %s)\n      %s\n", s->name,
                        range[0] ? "[" : "", range, range[0] ? "]" : "", def, s->help);
        }
}
