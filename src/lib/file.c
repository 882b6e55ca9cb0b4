#include "lib/file.h"

#include <stdio.h>

char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t n = 0, got;
    FILE *out = open_memstream(&text, &n);
    char buf[8192];
    while (out && (got = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, got, out);
    if (out)
        fclose(out);
    fclose(f);
    if (len)
        *len = n;
    return text;
}
