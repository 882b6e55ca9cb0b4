/* Settings from the environment, with defaults that work for the embedded
 * stack. Each module declares the settings it reads as a table (name,
 * range, default, one line of help), next to the code that uses them, as
 * Redis's config.c and nginx's ngx_command_t do: cfg_load reads a table
 * into the module's own struct of values, once at start-up (the values are
 * then read-only); cfg_print_help prints tables for a service's --help; the
 * README's settings table is made from that output (scripts/settings.sh)
 * and a test fails when the two differ. */
#ifndef SHOP_CONFIG_H
#define SHOP_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { CFG_INT, CFG_STR } cfg_type;

/* One setting. An integer's value is an int64_t, a string's a const char *
 * (borrowed from the environment or the table), at `offset` in the
 * module's struct of values. */
typedef struct cfg_setting {
    const char *name; /* the environment variable */
    cfg_type type;
    int64_t min, max; /* CFG_INT: the range */
    int64_t def;      /* CFG_INT: the value when unset */
    const char *text; /* CFG_STR: the value when unset; CFG_INT: how the
                       * default reads when it is not `def` itself (NULL:
                       * `def`), e.g. "2 per core", `def` 0 then meaning
                       * "the module works it out" */
    const char *help; /* one line */
    size_t offset;
} cfg_setting;

/* A module's settings. */
typedef struct cfg_table {
    const char *module; /* who reads them: "http", "orders", ... */
    const cfg_setting *settings;
    size_t n;
} cfg_table;

#define CFG_TABLE(module, array)                                                                   \
    {                                                                                              \
        module, array, sizeof array / sizeof *array                                                \
    }
/* An integer in [lo, hi], `def` when unset, into field `f` of `type`. */
#define CFG_I(name, type, f, lo, hi, def, help)                                                    \
    {                                                                                              \
        name, CFG_INT, lo, hi, def, NULL, help, offsetof(type, f)                                  \
    }
/* The same, whose default is worked out by its module (`def` 0) and reads `text`. */
#define CFG_I_DYN(name, type, f, lo, hi, text, help)                                               \
    {                                                                                              \
        name, CFG_INT, lo, hi, 0, text, help, offsetof(type, f)                                    \
    }
/* A string, `def` when unset or empty, into field `f` of `type`. */
#define CFG_S(name, type, f, def, help)                                                            \
    {                                                                                              \
        name, CFG_STR, 0, 0, 0, def, help, offsetof(type, f)                                       \
    }

/* Reads every setting of `t` into `values`. Returns 0, or a negative code
 * (-EINVAL: not a number, -ERANGE: outside its range) after logging each
 * setting that is wrong, naming it; `values` then holds the defaults of
 * those. */
int cfg_load(const cfg_table *t, void *values);

/* Prints the settings of `tables` (NULL-terminated): `tsv` false, a
 * line each for a person (`--help`); true, one tab-separated line each
 * (name, default, range, module, help) for scripts/settings.sh. */
void cfg_print_help(FILE *out, const cfg_table *const *tables, int tsv);

/* Returns the variable's value, or `def` when it is unset or empty.
 * Borrowed: valid for the life of the process (the environment is not
 * changed after start-up). For what no table declares: a test's hook. */
const char *cfg_str(const char *name, const char *def);

/* Parses a whole decimal integer within [min, max]. Pure.
 * Returns 0 and sets *out, or -EINVAL (not a number, trailing junk) or
 * -ERANGE (outside the bounds). */
int cfg_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);

#endif
