/* One table of options, filled from defaults, an INI file, the environment
 * and flags (see nb_config.h). The table drives everything: parsing, bounds
 * checks and --help, so there is no per-option code anywhere. */
#include "nb_config.h"
#include "nimbus/errors.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct load_ctx {
  const nb_opt *table;
  void *cfg;
  char *err;
  size_t errcap;
  int rc;
} load_ctx;

/* Option names use '_'; flags use '-'; both spellings are accepted. */
static bool name_eq(const char *opt, const char *s, size_t n) {
  if (strlen(opt) != n)
    return false;
  for (size_t i = 0; i < n; i++) {
    char a = opt[i], b = s[i];
    if (b == '-' || b == '.')
      b = '_';
    if (a != b)
      return false;
  }
  return true;
}

static const nb_opt *find_opt(const nb_opt *table, const char *s, size_t n) {
  for (const nb_opt *o = table; o->name != NULL; o++)
    if (name_eq(o->name, s, n))
      return o;
  return NULL;
}

static int set_value(const nb_opt *o, void *cfg, const char *val,
                     const char *origin, char *err, size_t errcap) {
  char *field = (char *)(o->base != NULL ? o->base : cfg) + o->offset;
  switch (o->type) {
  case NB_OPT_STR: {
    char *copy = strdup(val != NULL ? val : "");
    if (copy == NULL)
      return NIMBUS_ENOMEM;
    free(*(char **)field);
    *(char **)field = copy;
    return 0;
  }
  case NB_OPT_INT: {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(val != NULL ? val : "", &end, 10);
    if (val == NULL || *val == '\0' || *end != '\0' || errno != 0) {
      snprintf(err, errcap, "%s: %s must be a whole number, not \"%s\"", origin,
               o->name, val != NULL ? val : "");
      return NIMBUS_ECONFIG;
    }
    if (v < o->min || v > o->max) {
      snprintf(err, errcap, "%s: %s must be between %lld and %lld, not %lld",
               origin, o->name, (long long)o->min, (long long)o->max, v);
      return NIMBUS_ECONFIG;
    }
    *(int64_t *)field = (int64_t)v;
    return 0;
  }
  case NB_OPT_BOOL: {
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
      if (val != NULL && strcasecmp(val, yes[i]) == 0) {
        *(bool *)field = true;
        return 0;
      }
      if (val != NULL && strcasecmp(val, no[i]) == 0) {
        *(bool *)field = false;
        return 0;
      }
    }
    snprintf(err, errcap, "%s: %s must be true or false, not \"%s\"", origin,
             o->name, val != NULL ? val : "");
    return NIMBUS_ECONFIG;
  }
  }
  return NIMBUS_EINVAL;
}

static int on_ini_entry(void *user, const char *section, const char *name,
                        const char *value) {
  (void)section;
  load_ctx *lc = user;
  if (lc->rc != 0)
    return 0;
  const nb_opt *o = find_opt(lc->table, name, strlen(name));
  if (o == NULL) {
    snprintf(lc->err, lc->errcap, "config file: unknown option \"%s\"", name);
    lc->rc = NIMBUS_ECONFIG;
    return 0;
  }
  lc->rc = set_value(o, lc->cfg, value, "config file", lc->err, lc->errcap);
  return lc->rc == 0;
}

static void env_name(const char *opt, char *out, size_t cap) {
  size_t n = (size_t)snprintf(out, cap, "NIMBUS_");
  for (const char *p = opt; *p != '\0' && n + 1 < cap; p++)
    out[n++] = (char)toupper((unsigned char)(*p == '-' ? '_' : *p));
  out[n] = '\0';
}

int nb_config_load(const nb_opt *table, void *cfg, int argc, char **argv,
                   const char *default_file, bool *help, int *argc_rest,
                   char ***rest, char *errbuf, size_t errcap) {
  int rc = 0;
  *help = false;
  for (const nb_opt *o = table; o->name != NULL; o++) {
    if (o->type == NB_OPT_STR)
      *(char **)((char *)(o->base != NULL ? o->base : cfg) + o->offset) = NULL;
    rc = set_value(o, cfg, o->def != NULL ? o->def : "", "default", errbuf,
                   errcap);
    if (rc != 0)
      return rc;
  }

  /* The config files: every --config FILE and --config-if-exists FILE in
   * the order given, each overriding the ones before; without either,
   * NIMBUS_CONFIG, else the default when it exists. */
  enum { FILES_MAX = 16 };
  const char *files[FILES_MAX];
  bool required[FILES_MAX];
  size_t nfiles = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *f = NULL;
    bool req = true;
    if (strcmp(a, "--") == 0)
      break;
    if ((strcmp(a, "--config") == 0 || strcmp(a, "--config-if-exists") == 0) &&
        i + 1 < argc) {
      req = a[8] == '\0';
      f = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      f = a + 9;
    } else if (strncmp(a, "--config-if-exists=", 19) == 0) {
      f = a + 19;
      req = false;
    }
    if (f == NULL)
      continue;
    if (nfiles == FILES_MAX) {
      snprintf(errbuf, errcap, "more than %d config files", FILES_MAX);
      return NIMBUS_ECONFIG;
    }
    files[nfiles] = f;
    required[nfiles++] = req;
  }
  if (nfiles == 0 && getenv("NIMBUS_CONFIG") != NULL) {
    files[0] = getenv("NIMBUS_CONFIG");
    required[nfiles++] = true;
  }
  if (nfiles == 0 && default_file != NULL && access(default_file, R_OK) == 0) {
    files[0] = default_file;
    required[nfiles++] = false;
  }
  for (size_t k = 0; k < nfiles; k++) {
    const char *file = files[k];
    if (!required[k] && access(file, F_OK) != 0)
      continue; /* --config-if-exists: none there */
    load_ctx lc = {table, cfg, errbuf, errcap, 0};
    int r = ini_parse(file, on_ini_entry, &lc);
    if (lc.rc != 0)
      return lc.rc;
    if (r < 0) {
      snprintf(errbuf, errcap, "cannot read config file %s", file);
      return NIMBUS_ECONFIG;
    }
    if (r > 0) {
      snprintf(errbuf, errcap, "%s:%d: cannot parse this line", file, r);
      return NIMBUS_ECONFIG;
    }
  }

  for (const nb_opt *o = table; o->name != NULL; o++) {
    char env[96];
    env_name(o->name, env, sizeof env);
    const char *v = getenv(env);
    if (v != NULL && (rc = set_value(o, cfg, v, env, errbuf, errcap)) != 0)
      return rc;
  }

  /* Flags; positionals are compacted to the front of argv[1..]. */
  int npos = 0;
  bool only_pos = false;
  for (int i = 1; i < argc; i++) {
    char *a = argv[i];
    if (only_pos || a[0] != '-' || a[1] != '-' || a[2] == '\0') {
      if (!only_pos && strcmp(a, "--") == 0) {
        only_pos = true;
        continue;
      }
      argv[1 + npos++] = a;
      continue;
    }
    if (strcmp(a, "--help") == 0) {
      *help = true;
      return 0;
    }
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
    if (name_eq("config", name, nlen) ||
        name_eq("config_if_exists", name, nlen)) {
      if (eq == NULL)
        i++;
      continue;
    }
    const nb_opt *o = find_opt(table, name, nlen);
    if (o == NULL) {
      snprintf(errbuf, errcap, "unknown option --%.*s (see --help)", (int)nlen,
               name);
      return NIMBUS_ECONFIG;
    }
    const char *val = NULL;
    if (eq != NULL)
      val = eq + 1;
    else if (o->type == NB_OPT_BOOL)
      val = "true";
    else if (i + 1 < argc)
      val = argv[++i];
    else {
      snprintf(errbuf, errcap, "--%s needs a value", o->name);
      return NIMBUS_ECONFIG;
    }
    char origin[80];
    snprintf(origin, sizeof origin, "--%.*s", (int)nlen, name);
    if ((rc = set_value(o, cfg, val, origin, errbuf, errcap)) != 0)
      return rc;
  }
  *argc_rest = npos;
  *rest = argv + 1;
  return 0;
}

/* Prints `text` at an indent of 6, broken between words so that no line
 * passes column 78 (a longer word gets a line of its own). */
static void print_wrapped(FILE *f, const char *text) {
  enum { INDENT = 6, WIDTH = 78 };
  size_t col = 0;
  const char *p = text;
  while (*p != '\0') {
    while (*p == ' ')
      p++;
    size_t n = strcspn(p, " ");
    if (n == 0)
      break;
    if (col > 0 && col + 1 + n > WIDTH) {
      fputc('\n', f);
      col = 0;
    }
    if (col == 0) {
      fprintf(f, "%*s", INDENT, "");
      col = INDENT;
    } else {
      fputc(' ', f);
      col++;
    }
    fwrite(p, 1, n, f);
    col += n;
    p += n;
  }
  fputc('\n', f);
}

void nb_config_print_help(const nb_opt *table, const char *usage, void *fp) {
  FILE *f = fp;
  fputs(usage, f);
  fputs("\nOptions (flag, environment variable, config file key):\n", f);
  for (const nb_opt *o = table; o->name != NULL; o++) {
    char flag[64], env[96];
    size_t n = 0;
    for (const char *p = o->name; *p != '\0' && n + 1 < sizeof flag; p++)
      flag[n++] = *p == '_' ? '-' : *p;
    flag[n] = '\0';
    env_name(o->name, env, sizeof env);
    fprintf(f, "  --%s%s\n", flag,
            o->type == NB_OPT_BOOL ? ""
                                   : (o->type == NB_OPT_INT ? " N" : " VALUE"));
    char text[1024];
    if (o->def != NULL && o->def[0] != '\0')
      snprintf(text, sizeof text, "%s (default: %s)", o->help, o->def);
    else
      snprintf(text, sizeof text, "%s", o->help);
    print_wrapped(f, text);
    fprintf(f, "      env %s, key %s\n", env, o->name);
  }
  fputs("  --config FILE\n      read options from an INI file first "
        "(env NIMBUS_CONFIG); given\n      again, the later file overrides "
        "the earlier\n  --config-if-exists FILE\n      the same when FILE "
        "exists; nothing when not\n  --help\n      print this help\n",
        f);
}

bool nb_config_take_flag(int *argc, char **argv, const char *flag) {
  bool found = false;
  int n = 1;
  for (int i = 1; i < *argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      while (i < *argc)
        argv[n++] = argv[i++];
      break;
    }
    if (strcmp(argv[i], flag) == 0)
      found = true;
    else
      argv[n++] = argv[i];
  }
  *argc = n;
  return found;
}

void nb_config_print(const nb_opt *table, const void *cfg, void *fp) {
  FILE *f = fp;
  for (const nb_opt *o = table; o->name != NULL; o++) {
    const char *field =
        (const char *)(o->base != NULL ? o->base : cfg) + o->offset;
    size_t n = strlen(o->name);
    bool secret = n >= 8 && strcmp(o->name + n - 8, "password") == 0;
    switch (o->type) {
    case NB_OPT_STR: {
      const char *v = *(char *const *)field;
      if (secret)
        v = v != NULL && v[0] != '\0' ? "(set)" : "";
      fprintf(f, "%s = %s\n", o->name, v != NULL ? v : "");
      break;
    }
    case NB_OPT_INT:
      fprintf(f, "%s = %lld\n", o->name, (long long)*(const int64_t *)field);
      break;
    case NB_OPT_BOOL:
      fprintf(f, "%s = %s\n", o->name, *(const bool *)field ? "true" : "false");
      break;
    }
  }
}

void nb_config_free(const nb_opt *table, void *cfg) {
  for (const nb_opt *o = table; o->name != NULL; o++) {
    if (o->type == NB_OPT_STR) {
      char **p =
          (char **)((char *)(o->base != NULL ? o->base : cfg) + o->offset);
      free(*p);
      *p = NULL;
    }
  }
}
