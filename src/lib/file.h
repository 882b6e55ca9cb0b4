/* Whole-file reads, for the small files a service loads at start-up
 * (migrations, its OpenAPI document). */
#ifndef SHOP_FILE_H
#define SHOP_FILE_H

#include <stddef.h>

/* Returns the file's bytes, NUL-terminated (caller frees), and their count
 * in *len when len is not NULL; NULL with errno set when it cannot be read. */
char *file_read(const char *path, size_t *len);

#endif
