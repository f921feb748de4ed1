/* Configuration from one table: each option has a name, a type, a default
 * and a help line. Values come from the defaults, then an INI file (libinih;
 * keys may sit in any section), then the environment (NIMBUS_<NAME> in upper
 * case, dots and dashes as underscores), then --name=value or --name value
 * flags, later sources overriding earlier ones. --help prints the table. */
#ifndef NB_CONFIG_H
#define NB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum nb_opt_type {
  NB_OPT_STR,  /* char* (heap, owned by the config) */
  NB_OPT_INT,  /* int64_t */
  NB_OPT_BOOL, /* bool: 1/0, true/false, yes/no, on/off */
} nb_opt_type;

typedef struct nb_opt {
  const char
      *name; /* e.g. "mqtt_host"; flag --mqtt-host, env NIMBUS_MQTT_HOST */
  nb_opt_type type;
  const char *def;  /* default as text; NULL for an empty string */
  const char *help; /* one line */
  size_t offset;    /* offsetof the field in the caller's struct */
  int64_t min, max; /* bounds for NB_OPT_INT */
  /* When non-NULL, the struct the offset is into, instead of the `cfg`
   * the table is loaded into: so one table can gather the options of
   * several structs (the worker's own and each handler family's). */
  void *base;
} nb_opt;

/* Loads `table` (terminated by an entry with name NULL) into `cfg`.
 * Order: defaults, the files named by --config FILE (one that cannot be
 * read is an error) and --config-if-exists FILE (skipped when there is no
 * such file), each read in the order given and overriding the ones
 * before, at most 16 (without either: the file in env NIMBUS_CONFIG, or
 * `default_file` if it exists; may be NULL), environment, flags.
 * Positional arguments (not flags) are left in `argv` after `*argc_rest`
 * is set to their count, starting at argv[0] of the returned array
 * `*rest` (which points into argv; borrowed). `--help` sets *help to true
 * and returns 0 without reading further. On error writes a sentence for a
 * person into errbuf (size errcap) and returns NIMBUS_ECONFIG. */
int nb_config_load(const nb_opt *table, void *cfg, int argc, char **argv,
                   const char *default_file, bool *help, int *argc_rest,
                   char ***rest, char *errbuf, size_t errcap);

/* Prints `usage` and then every option of `table` with its default and
 * help to `fp` (a FILE*). */
void nb_config_print_help(const nb_opt *table, const char *usage, void *fp);

/* Prints every option of `table` with its value in `cfg` as INI lines
 * ("name = value"), the way a config file would set it, to `fp` (a
 * FILE*). Options whose name ends in "password" print as "(set)" or
 * nothing. */
void nb_config_print(const nb_opt *table, const void *cfg, void *fp);

/* Takes every `flag` (e.g. "--print-config", a flag of the program's
 * own, outside the table) out of argv[1..*argc-1], up to a "--", moving
 * the rest down and lowering *argc. Returns true when it was there. */
bool nb_config_take_flag(int *argc, char **argv, const char *flag);

/* Frees the strings the config owns in `cfg`. */
void nb_config_free(const nb_opt *table, void *cfg);

#endif
