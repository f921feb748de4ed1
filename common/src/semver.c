/* Semantic versions (nb_semver.h): a validating parser and SemVer 2.0.0's
 * precedence, by hand because no Debian library does it for C (libsemver
 * is not packaged, and dpkg's and rpm's version orders are other orders:
 * they put 1.0.0~rc1 before 1.0.0 by their own tilde rule, not by
 * SemVer's pre-release rule). Every walk is bounded by NB_SEMVER_MAX. */
#include "nb_semver.h"

#include <string.h>

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_ident_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         c == '-';
}

/* A number at s[*i..]: digits, no leading zero; *i past it. */
static bool number(const char *s, size_t n, size_t *i) {
  size_t start = *i;
  while (*i < n && is_digit(s[*i]))
    (*i)++;
  size_t len = *i - start;
  return len > 0 && !(len > 1 && s[start] == '0');
}

/* Dot-separated identifiers at s[*i..] up to `stop` (or the end), each
 * non-empty of [0-9A-Za-z-]; numeric ones without a leading zero when
 * `numeric_rule` (pre-release; build metadata may have them). */
static bool idents(const char *s, size_t n, size_t *i, char stop,
                   bool numeric_rule) {
  for (;;) {
    size_t start = *i;
    bool digits = true;
    while (*i < n && s[*i] != '.' && s[*i] != stop) {
      if (!is_ident_char(s[*i]))
        return false;
      digits = digits && is_digit(s[*i]);
      (*i)++;
    }
    size_t len = *i - start;
    if (len == 0)
      return false;
    if (numeric_rule && digits && len > 1 && s[start] == '0')
      return false;
    if (*i < n && s[*i] == '.') {
      (*i)++;
      continue;
    }
    return true;
  }
}

bool nb_semver_valid(const char *s, size_t n) {
  if (s == NULL || n == 0 || n > NB_SEMVER_MAX)
    return false;
  size_t i = 0;
  for (int part = 0; part < 3; part++) {
    if (!number(s, n, &i))
      return false;
    if (part < 2) {
      if (i >= n || s[i] != '.')
        return false;
      i++;
    }
  }
  if (i < n && s[i] == '-') {
    i++;
    if (!idents(s, n, &i, '+', true))
      return false;
  }
  if (i < n && s[i] == '+') {
    i++;
    if (!idents(s, n, &i, '\0', false))
      return false;
  }
  return i == n;
}

size_t nb_semver_core_len(const char *s, size_t n) {
  const char *plus = memchr(s, '+', n);
  return plus != NULL ? (size_t)(plus - s) : n;
}

/* Compares two digit strings without leading zeros as numbers. */
static int cmp_num(const char *a, size_t an, const char *b, size_t bn) {
  if (an != bn)
    return an < bn ? -1 : 1;
  int c = memcmp(a, b, an);
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

static bool all_digits(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!is_digit(s[i]))
      return false;
  return true;
}

/* The next field of a valid version's core at *p (up to `end`): a run up
 * to '.', or up to end; *p moves past it and its '.'. */
static void field(const char **p, const char *end, const char **f, size_t *fn) {
  const char *q = *p;
  while (q < end && *q != '.')
    q++;
  *f = *p;
  *fn = (size_t)(q - *p);
  *p = q < end ? q + 1 : q;
}

int nb_semver_cmp(const char *a, const char *b) {
  size_t an = strnlen(a, NB_SEMVER_MAX + 1), bn = strnlen(b, NB_SEMVER_MAX + 1);
  bool av = nb_semver_valid(a, an), bv = nb_semver_valid(b, bn);
  if (!av || !bv) {
    if (av != bv)
      return av ? 1 : -1;
    int c = strcmp(a, b);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  an = nb_semver_core_len(a, an);
  bn = nb_semver_core_len(b, bn);
  const char *ae = a + an, *be = b + bn;
  /* The release: three numbers, each ended by '.' or by '-' / the end. */
  const char *ap = a, *bp = b;
  for (int part = 0; part < 3; part++) {
    const char *af = ap, *bf = bp;
    while (ap < ae && is_digit(*ap))
      ap++;
    while (bp < be && is_digit(*bp))
      bp++;
    int c = cmp_num(af, (size_t)(ap - af), bf, (size_t)(bp - bf));
    if (c != 0)
      return c;
    if (part < 2) {
      ap++;
      bp++;
    }
  }
  /* Here each is at its end or at the '-' of its pre-release. */
  bool apre = ap < ae, bpre = bp < be;
  if (!apre || !bpre)
    return apre == bpre ? 0 : (apre ? -1 : 1);
  ap++;
  bp++;
  while (ap < ae && bp < be) {
    const char *af, *bf;
    size_t afn, bfn;
    field(&ap, ae, &af, &afn);
    field(&bp, be, &bf, &bfn);
    bool anum = all_digits(af, afn), bnum = all_digits(bf, bfn);
    int c;
    if (anum && bnum) {
      c = cmp_num(af, afn, bf, bfn);
    } else if (anum != bnum) {
      c = anum ? -1 : 1;
    } else {
      c = memcmp(af, bf, afn < bfn ? afn : bfn);
      if (c == 0)
        c = afn < bfn ? -1 : (afn > bfn ? 1 : 0);
      else
        c = c < 0 ? -1 : 1;
    }
    if (c != 0)
      return c;
  }
  /* One list is a prefix of the other: the shorter comes first. */
  if (ap < ae)
    return 1;
  if (bp < be)
    return -1;
  return 0;
}
