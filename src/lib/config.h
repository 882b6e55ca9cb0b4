/* Settings from the environment, with defaults that work for the embedded
 * stack (DESIGN §2). Read once at start-up; the values are then read-only. */
#ifndef SHOP_CONFIG_H
#define SHOP_CONFIG_H

#include <stdint.h>

/* Returns the variable's value, or `def` when it is unset or empty.
 * Borrowed: valid for the life of the process (the environment is not
 * changed after start-up). */
const char *cfg_str(const char *name, const char *def);

/* Parses a whole decimal integer within [min, max]. Pure.
 * Returns 0 and sets *out, or -EINVAL (not a number, trailing junk) or
 * -ERANGE (outside the bounds). */
int cfg_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);

/* Reads an integer setting: `def` when unset, else the parsed value.
 * Returns 0, or a negative code from cfg_parse_int after logging which
 * variable is wrong. */
int cfg_int(const char *name, int64_t min, int64_t max, int64_t def, int64_t *out);

#endif
