/* The golden messages checked against the spec itself: this test reads
 * schemas/SPEC.md at run time, so a golden file and the page that
 * describes it cannot drift apart again (limits.message once said 278528,
 * the task limit, in both the golden file and its row, while the ping
 * table said 1048576).
 *
 * Every *.hex file in schemas/golden/ (not malformed/) must decode with
 * the decoder its name starts with, be listed in section 6's table, and be
 * exactly the message that row writes down; every row must have its file.
 * Then, from the other tables: each envelope key has the type section 3
 * gives it; a task's args and a reply's result have the types of the
 * "Args:" and "Result:" tables of the task type the row names; and a
 * result key described by a table of defaults (ping's `limits`) holds
 * exactly those defaults. test_codec compares the bytes with the encoders;
 * this test compares the meaning with the prose. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "test_hex.h"

#include "sc.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- SPEC.md's tables -------------------------------------------------- */

#define MAX_CELLS 8
#define MAX_TABLES 128
#define MAX_ROWS 64

/* One markdown table: the heading it is under, the paragraph line just
 * before it ("... Result:"), its header and body rows. Cells point into
 * the page's text, which the test keeps for its whole run. */
typedef struct row {
  char *cell[MAX_CELLS];
  size_t ncell;
} row;

typedef struct table {
  const char *heading;
  const char *lead;
  row head;
  row rows[MAX_ROWS];
  size_t nrows;
} table;

static char *spec_text;
static table tables[MAX_TABLES];
static size_t ntables;

static const char *source_dir(void) {
  const char *d = getenv("NIMBUS_SOURCE_DIR");
#ifdef NIMBUS_SOURCE_DIR_DEFAULT
  if (d == NULL || *d == '\0')
    d = NIMBUS_SOURCE_DIR_DEFAULT;
#endif
  if (d == NULL)
    fail_msg("NIMBUS_SOURCE_DIR is not set");
  return d;
}

static char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    fail_msg("cannot open %s", path);
  size_t cap = 1 << 20, n = 0;
  char *t = malloc(cap);
  assert_non_null(t);
  n = fread(t, 1, cap - 1, f);
  assert_true(n < cap - 1); /* no page this size */
  fclose(f);
  t[n] = '\0';
  if (len != NULL)
    *len = n;
  return t;
}

/* Trims spaces in place. */
static char *trim(char *s) {
  while (*s == ' ')
    s++;
  size_t n = strlen(s);
  while (n > 0 && s[n - 1] == ' ')
    s[--n] = '\0';
  return s;
}

/* Splits "| a | b |" into cells (in place). */
static void split_row(char *line, row *r) {
  r->ncell = 0;
  char *p = line + 1; /* past the first '|' */
  while (*p != '\0' && r->ncell < MAX_CELLS) {
    char *bar = strchr(p, '|');
    if (bar == NULL)
      break;
    *bar = '\0';
    r->cell[r->ncell++] = trim(p);
    p = bar + 1;
  }
}

static void spec_load(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/schemas/SPEC.md", source_dir());
  spec_text = read_text(path, NULL);
  ntables = 0;
  memset(tables, 0, sizeof tables);
  const char *heading = "", *lead = "";
  table *t = NULL;
  bool in_code = false;
  for (char *line = spec_text, *next; line != NULL; line = next) {
    next = strchr(line, '\n');
    if (next != NULL)
      *next++ = '\0';
    if (strncmp(line, "```", 3) == 0)
      in_code = !in_code;
    if (in_code)
      continue;
    if (line[0] == '|') {
      if (t == NULL) {
        assert_true(ntables < MAX_TABLES);
        t = &tables[ntables++];
        t->heading = heading;
        t->lead = lead;
        split_row(line, &t->head);
      } else if (strncmp(line, "| ---", 5) != 0) {
        assert_true(t->nrows < MAX_ROWS);
        split_row(line, &t->rows[t->nrows++]);
      }
      continue;
    }
    t = NULL;
    if (line[0] == '#')
      heading = line;
    else if (trim(line)[0] != '\0')
      lead = trim(line);
  }
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The first table under a heading that starts with `heading` whose lead
 * line ends with `lead` (or any, when NULL) and whose second header cell is
 * `col2`; NULL when there is none. */
static const table *find_table(const char *heading, const char *lead,
                               const char *col2) {
  for (size_t i = 0; i < ntables; i++) {
    const table *t = &tables[i];
    if (strncmp(t->heading, heading, strlen(heading)) == 0 &&
        (lead == NULL || ends_with(t->lead, lead)) && t->head.ncell >= 2 &&
        strcmp(t->head.cell[1], col2) == 0)
      return t;
  }
  return NULL;
}

/* Copies a cell without its backticks into out[cap]. */
static void unquote(const char *cell, char *out, size_t cap) {
  size_t n = 0;
  for (const char *p = cell; *p != '\0' && n + 1 < cap; p++)
    if (*p != '`')
      out[n++] = *p;
  out[n] = '\0';
}

/* The row of `t` whose first cell, unquoted, is `key` (a cell may list
 * several keys: "`done`, `total`"); NULL when none. */
static const row *find_row(const table *t, const char *key) {
  for (size_t i = 0; i < t->nrows; i++) {
    char k[256];
    unquote(t->rows[i].cell[0], k, sizeof k);
    for (char *save = NULL, *tok = strtok_r(k, ", ", &save); tok != NULL;
         tok = strtok_r(NULL, ", ", &save))
      if (strcmp(tok, key) == 0)
        return &t->rows[i];
  }
  return NULL;
}

/* ---- The notation of section 6 ----------------------------------------- */

/* Parses one value of the notation at *p and compares it with `o`; on a
 * difference fails the test naming `path` and the two values. */
static void match(const char **p, const msgpack_object *o, const char *file,
                  const char *path);

static void skip_ws(const char **p) {
  while (**p == ' ')
    (*p)++;
}

static void expect_char(const char **p, char c, const char *file) {
  skip_ws(p);
  if (**p != c)
    fail_msg("%s: SPEC.md's notation: expected '%c' at \"%.20s\"", file, c, *p);
  (*p)++;
}

/* A quoted string (escapes \" and \\) into out[cap]; its length. */
static size_t parse_string(const char **p, char *out, size_t cap,
                           const char *file) {
  size_t n = 0;
  expect_char(p, '"', file);
  for (; **p != '"'; (*p)++) {
    if (**p == '\0')
      fail_msg("%s: SPEC.md's notation: an unterminated string", file);
    if (**p == '\\')
      (*p)++;
    assert_true(n + 1 < cap);
    out[n++] = **p;
  }
  (*p)++;
  out[n] = '\0';
  return n;
}

static const char *type_of(const msgpack_object *o) {
  switch (o->type) {
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return "int";
  case MSGPACK_OBJECT_STR:
    return "str";
  case MSGPACK_OBJECT_BIN:
    return "bin";
  case MSGPACK_OBJECT_MAP:
    return "map";
  case MSGPACK_OBJECT_ARRAY:
    return "array";
  case MSGPACK_OBJECT_BOOLEAN:
    return "bool";
  case MSGPACK_OBJECT_NIL:
    return "nil";
  default:
    return "float";
  }
}

static void want_type(const msgpack_object *o, msgpack_object_type a,
                      msgpack_object_type b, const char *want, const char *file,
                      const char *path) {
  if (o->type != a && o->type != b)
    fail_msg("%s: %s: SPEC.md says %s, the golden file has %s", file, path,
             want, type_of(o));
}

static void match(const char **p, const msgpack_object *o, const char *file,
                  const char *path) {
  char sub[512], s[1024];
  skip_ws(p);
  if (**p == '{') {
    want_type(o, MSGPACK_OBJECT_MAP, MSGPACK_OBJECT_MAP, "a map", file, path);
    (*p)++;
    size_t keys = 0;
    skip_ws(p);
    while (**p != '}') {
      if (keys > 0)
        expect_char(p, ',', file);
      skip_ws(p);
      size_t n = 0;
      while (**p != ':' && **p != '\0' && n + 1 < sizeof s)
        s[n++] = *(*p)++;
      s[n] = '\0';
      expect_char(p, ':', file);
      snprintf(sub, sizeof sub, "%.300s%s%.100s", path, *path ? "." : "", s);
      const msgpack_object *v = sc_map_get(o, s);
      if (v == NULL)
        fail_msg("%s: %s: SPEC.md has it, the golden file does not", file, sub);
      match(p, v, file, sub);
      keys++;
      skip_ws(p);
    }
    (*p)++;
    if (o->via.map.size != keys)
      fail_msg("%s: %s: SPEC.md gives %zu keys, the golden file has %u", file,
               *path ? path : "the message", keys, o->via.map.size);
  } else if (**p == '[') {
    want_type(o, MSGPACK_OBJECT_ARRAY, MSGPACK_OBJECT_ARRAY, "an array", file,
              path);
    (*p)++;
    uint32_t i = 0;
    skip_ws(p);
    while (**p != ']') {
      if (i > 0)
        expect_char(p, ',', file);
      if (i >= o->via.array.size)
        fail_msg("%s: %s: SPEC.md lists more than the golden file's %u", file,
                 path, o->via.array.size);
      snprintf(sub, sizeof sub, "%.300s[%u]", path, i);
      match(p, &o->via.array.ptr[i++], file, sub);
      skip_ws(p);
    }
    (*p)++;
    if (i != o->via.array.size)
      fail_msg("%s: %s: SPEC.md lists %u values, the golden file has %u", file,
               path, i, o->via.array.size);
  } else if (**p == '"' || strncmp(*p, "bin ", 4) == 0) {
    bool bin = **p == 'b';
    if (bin)
      *p += 4;
    size_t n = parse_string(p, s, sizeof s, file);
    want_type(o, bin ? MSGPACK_OBJECT_BIN : MSGPACK_OBJECT_STR,
              bin ? MSGPACK_OBJECT_BIN : MSGPACK_OBJECT_STR,
              bin ? "bin" : "a string", file, path);
    const char *got = bin ? o->via.bin.ptr : o->via.str.ptr;
    uint32_t gn = bin ? o->via.bin.size : o->via.str.size;
    if (gn != n || memcmp(got, s, n) != 0)
      fail_msg("%s: %s: SPEC.md says \"%s\", the golden file has \"%.*s\"",
               file, path, s, (int)gn, got);
  } else if (strncmp(*p, "true", 4) == 0 || strncmp(*p, "false", 5) == 0) {
    bool want = **p == 't';
    *p += want ? 4 : 5;
    want_type(o, MSGPACK_OBJECT_BOOLEAN, MSGPACK_OBJECT_BOOLEAN, "a bool", file,
              path);
    if (o->via.boolean != want)
      fail_msg("%s: %s: SPEC.md says %s, the golden file has %s", file, path,
               want ? "true" : "false", o->via.boolean ? "true" : "false");
  } else {
    char *end = NULL;
    long long want = strtoll(*p, &end, 10);
    if (end == *p)
      fail_msg("%s: %s: SPEC.md's notation: no value at \"%.20s\"", file, path,
               *p);
    *p = end;
    want_type(o, MSGPACK_OBJECT_POSITIVE_INTEGER,
              MSGPACK_OBJECT_NEGATIVE_INTEGER, "an int", file, path);
    long long got = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                        ? (long long)o->via.u64
                        : (long long)o->via.i64;
    if (got != want)
      fail_msg("%s: %s: SPEC.md says %lld, the golden file has %lld", file,
               path, want, got);
  }
}

/* ---- Types and defaults from the other tables -------------------------- */

/* Checks that `o` has the type a table's type cell names: "int", "str",
 * "map", "bin", "any", "array of int", "array of str". */
static void check_type(const char *cell, const msgpack_object *o,
                       const char *file, const char *path) {
  char t[64];
  unquote(cell, t, sizeof t);
  if (strcmp(t, "any") == 0)
    return;
  if (strncmp(t, "array of ", 9) == 0) {
    want_type(o, MSGPACK_OBJECT_ARRAY, MSGPACK_OBJECT_ARRAY, t, file, path);
    for (uint32_t i = 0; i < o->via.array.size; i++) {
      char sub[512];
      snprintf(sub, sizeof sub, "%.300s[%u]", path, i);
      check_type(t + 9, &o->via.array.ptr[i], file, sub);
    }
    return;
  }
  if (strcmp(t, type_of(o)) != 0)
    fail_msg("%s: %s: SPEC.md's table says %s, the golden file has %s", file,
             path, t, type_of(o));
}

/* Every key of map `o` is in table `t` (unless the table has a row
 * "others") with the type of its second column. */
static void check_keys(const table *t, const msgpack_object *o,
                       const char *file, const char *prefix) {
  bool others = find_row(t, "others") != NULL;
  for (uint32_t i = 0; i < o->via.map.size; i++) {
    const msgpack_object_kv *kv = &o->via.map.ptr[i];
    char key[128], path[256];
    snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size,
             kv->key.via.str.ptr);
    snprintf(path, sizeof path, "%.100s%s", prefix, key);
    const row *r = find_row(t, key);
    if (r == NULL && !others)
      fail_msg("%s: %s is in no row of the table under \"%s\"", file, path,
               t->heading);
    if (r != NULL)
      check_type(r->cell[1], &kv->val, file, path);
  }
}

/* Checks the map `o` (args or result of task type `type`) against that
 * type's table, whose lead ends with `lead` ("Args:", "Result:"), and
 * each key described by a table of defaults ("`limits` (...):") against
 * those defaults. A type without such tables is checked by section 6's
 * notation only. */
static void check_payload(const char *type, const char *lead,
                          const msgpack_object *o, const char *file,
                          const char *prefix) {
  char heading[128];
  snprintf(heading, sizeof heading, "### `%s`", type);
  const table *t = find_table(heading, lead, "type");
  if (t == NULL) {
    snprintf(heading, sizeof heading, "#### `%s`", type);
    t = find_table(heading, lead, "type");
  }
  if (t != NULL)
    check_keys(t, o, file, prefix);
  if (strcmp(lead, "Result:") != 0)
    return;
  for (size_t i = 0; i < ntables; i++) {
    const table *d = &tables[i];
    if (strncmp(d->heading, heading, strlen(heading)) != 0 ||
        d->head.ncell < 2 || strcmp(d->head.cell[1], "default") != 0)
      continue;
    /* The lead names the result key: "`limits` (all ints; ...):". */
    char key[64];
    if (sscanf(d->lead, "`%63[^`]`", key) != 1)
      fail_msg("SPEC.md: a table of defaults under %s names no key",
               d->heading);
    const msgpack_object *m = sc_map_get(o, key);
    if (m == NULL)
      continue;
    want_type(m, MSGPACK_OBJECT_MAP, MSGPACK_OBJECT_MAP, "a map", file, key);
    for (uint32_t k = 0; k < m->via.map.size; k++) {
      const msgpack_object_kv *kv = &m->via.map.ptr[k];
      char name[128];
      snprintf(name, sizeof name, "%.*s", (int)kv->key.via.str.size,
               kv->key.via.str.ptr);
      const row *r = find_row(d, name);
      if (r == NULL)
        fail_msg("%s: %s%s.%s is not in SPEC.md's table of %s", file, prefix,
                 key, name, key);
      char def[64];
      unquote(r->cell[1], def, sizeof def);
      char *end = NULL;
      long long want = strtoll(def, &end, 10);
      assert_true(end != def && *end == '\0');
      want_type(&kv->val, MSGPACK_OBJECT_POSITIVE_INTEGER,
                MSGPACK_OBJECT_NEGATIVE_INTEGER, "an int", file, name);
      long long got = (long long)kv->val.via.u64;
      if (got != want)
        fail_msg("%s: %s%s.%s is %lld; SPEC.md's table of %s says %lld", file,
                 prefix, key, name, got, key, want);
    }
  }
}

/* ---- The test ----------------------------------------------------------- */

static void check_one(const char *name, const table *golden) {
  char path[1024], file[256];
  snprintf(path, sizeof path, "%s/schemas/golden/%s", source_dir(), name);
  size_t tn = 0;
  char *text = read_text(path, &tn);
  uint8_t *b = malloc(tn / 2 + 1);
  assert_non_null(b);
  size_t n = unhex(text, b, tn / 2 + 1);
  free(text);

  /* The row, by file name. */
  const row *r = NULL;
  for (size_t i = 0; i < golden->nrows && r == NULL; i++) {
    unquote(golden->rows[i].cell[0], file, sizeof file);
    if (strcmp(file, name) == 0)
      r = &golden->rows[i];
  }
  if (r == NULL)
    fail_msg("%s is not listed in SPEC.md's section 6", name);
  assert_true(r->ncell >= 3);

  /* The decoder its name gives, and the envelope table of section 3. */
  char err[256];
  const char *envelope = NULL;
  if (strncmp(name, "task_", 5) == 0) {
    sc_task t;
    if (sc_task_decode(b, n, &t, err, sizeof err) != 0)
      fail_msg("%s: %s", name, err);
    sc_task_fini(&t);
    envelope = "### Task";
  } else if (strncmp(name, "reply_", 6) == 0) {
    sc_reply rp;
    if (sc_reply_decode(b, n, &rp, err, sizeof err) != 0)
      fail_msg("%s: %s", name, err);
    sc_reply_fini(&rp);
    envelope = "### Reply";
  } else if (strncmp(name, "notice_", 7) == 0) {
    sc_notice nt;
    if (sc_notice_decode(b, n, &nt, err, sizeof err) != 0)
      fail_msg("%s: %s", name, err);
    sc_notice_fini(&nt);
    envelope = "### Notice";
  } else {
    fail_msg("%s: a golden file's name starts with task_, reply_ or notice_",
             name);
  }
  msgpack_object o;
  msgpack_zone *z = NULL;
  assert_int_equal(sc_value_decode(b, n, &o, &z, err, sizeof err), 0);

  /* Exactly the message its row writes. */
  const char *note = strchr(r->cell[1], '`');
  if (note == NULL)
    fail_msg("%s: its row in SPEC.md gives no message", name);
  note++;
  match(&note, &o, name, "");
  skip_ws(&note);
  if (*note != '`')
    fail_msg("%s: SPEC.md's notation goes on after the message: \"%.20s\"",
             name, note);

  const table *env = find_table(envelope, NULL, "type");
  if (env == NULL)
    fail_msg("SPEC.md has no table under %s", envelope);
  check_keys(env, &o, name, "");

  /* A task, and a reply that succeeded, belong to a task type whose
   * tables apply; only error and progress replies stand alone. */
  char type[64];
  unquote(r->cell[2], type, sizeof type);
  const msgpack_object *status = sc_map_get(&o, "status");
  bool ok = status == NULL || (status->via.str.size == 2 &&
                               memcmp(status->via.str.ptr, "ok", 2) == 0);
  if (strcmp(envelope, "### Notice") != 0 && ok && type[0] == '\0')
    fail_msg("%s: its row in SPEC.md names no task type", name);
  if (type[0] != '\0') {
    const msgpack_object *args = sc_map_get(&o, "args");
    const msgpack_object *result = sc_map_get(&o, "result");
    if (args != NULL)
      check_payload(type, "Args:", args, name, "args.");
    if (result != NULL)
      check_payload(type, "Result:", result, name, "result.");
  }
  msgpack_zone_free(z);
  free(b);
}

static void test_golden_against_spec(void **state) {
  (void)state;
  spec_load();
  const table *golden = find_table("## 6. Golden", NULL, "message");
  if (golden == NULL)
    fail_msg("SPEC.md has no table of golden messages in section 6");
  /* The tables this test relies on are there. */
  assert_non_null(find_table("### `ping`", "Result:", "type"));
  assert_non_null(find_table("### `ping`", NULL, "default"));
  assert_non_null(find_table("#### `blob.put`", "Args:", "type"));

  char dir[1024];
  snprintf(dir, sizeof dir, "%s/schemas/golden", source_dir());
  DIR *d = opendir(dir);
  assert_non_null(d);
  size_t files = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    size_t len = strlen(e->d_name);
    if (len < 5 || strcmp(e->d_name + len - 4, ".hex") != 0)
      continue;
    check_one(e->d_name, golden);
    files++;
  }
  closedir(d);
  /* Every row has its file. */
  for (size_t i = 0; i < golden->nrows; i++) {
    char name[256], p[1280];
    unquote(golden->rows[i].cell[0], name, sizeof name);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (f == NULL)
      fail_msg("SPEC.md lists %s, which schemas/golden/ does not hold", name);
    fclose(f);
  }
  assert_int_equal(files, golden->nrows);
  free(spec_text);
}

/* The limits a ping reports are the code's own: the table of defaults
 * gives the constants of sc.h, so neither can change alone. */
static void test_limits_match_code(void **state) {
  (void)state;
  spec_load();
  const table *limits = find_table("### `ping`", NULL, "default");
  assert_non_null(limits);
  static const struct {
    const char *key;
    long long value;
  } want[] = {
      {"segment", SC_SEGMENT},
      {"message", SC_MAX_MESSAGE},
      {"task", SC_MAX_TASK},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const row *r = find_row(limits, want[i].key);
    if (r == NULL)
      fail_msg("SPEC.md's limits table has no row %s", want[i].key);
    char def[64];
    unquote(r->cell[1], def, sizeof def);
    if (strtoll(def, NULL, 10) != want[i].value)
      fail_msg("limits.%s: SPEC.md says %s, sc.h %lld", want[i].key, def,
               want[i].value);
  }
  free(spec_text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_against_spec),
      cmocka_unit_test(test_limits_match_code),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
