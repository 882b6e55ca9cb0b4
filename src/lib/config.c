#include "lib/config.h"
#include "lib/log.h"

#include <errno.h>
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

int cfg_int(const char *name, int64_t min, int64_t max, int64_t def, int64_t *out)
{
    const char *v = cfg_str(name, NULL);
    if (!v) {
        *out = def;
        return 0;
    }
    int rc = cfg_parse_int(v, min, max, out);
    if (rc < 0)
        log_msg(LOG_ERROR, NULL, "setting %s=%s is not an integer in [%lld, %lld]", name, v,
                (long long)min, (long long)max);
    return rc;
}
