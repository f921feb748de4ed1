/* The bounded walker: reads msgpack bytes without building anything, and
 * decides whether a buffer may be handed to msgpack-c at all.
 *
 * msgpack-c allocates for a container's declared length before it reads a
 * single element (FINDINGS.md: `dd 04 00 00 00` maps 2 GiB), and it accepts
 * duplicate keys, ext values and any depth up to its own stack. So every
 * buffer goes through this walker first. It keeps a count of the values
 * that are declared but not read yet; each needs at least one byte, so
 * that count may never exceed the bytes left. That one rule rejects every
 * inflated length at its header, and bounds what msgpack-c will allocate
 * by the size of the buffer. It is hand-written because no Debian library
 * validates msgpack without materialising it.
 *
 * The same file holds the lenient scan that digs a task's id out of a task
 * that is otherwise broken, so that the error reply can echo it. */
#include "sc_internal.h"

#include "nimbus/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG_TRUNCATED "the message ends before its declared length"

/* The kinds of msgpack header that matter to the walker. */
enum head_kind {
  HEAD_SCALAR, /* nil, bool, int, float: `body` fixed bytes follow */
  HEAD_STR,
  HEAD_BIN,
  HEAD_EXT,   /* `body` bytes follow the type byte */
  HEAD_ARRAY, /* `count` values follow */
  HEAD_MAP,   /* `count` key/value pairs follow */
  HEAD_BAD    /* 0xc1, never valid */
};

typedef struct head {
  enum head_kind kind;
  size_t hlen;    /* bytes of the header itself */
  uint64_t body;  /* bytes after the header (scalar, str, bin, ext) */
  uint64_t count; /* values (array) or pairs (map) */
} head;

static uint64_t be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = (v << 8) | p[i];
  return v;
}

/* Reads the header at p (avail bytes there). Returns false when the header
 * itself is cut off. */
static bool read_head(const uint8_t *p, size_t avail, head *h) {
  if (avail < 1)
    return false;
  uint8_t b = p[0];
  h->hlen = 1;
  h->body = 0;
  h->count = 0;
  h->kind = HEAD_SCALAR;
  /* Width in bytes of a length field that follows the first byte. */
  size_t lenw = 0;
  if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
    return true;
  if (b >= 0x80 && b <= 0x8f) {
    h->kind = HEAD_MAP;
    h->count = b & 0x0f;
    return true;
  }
  if (b >= 0x90 && b <= 0x9f) {
    h->kind = HEAD_ARRAY;
    h->count = b & 0x0f;
    return true;
  }
  if (b >= 0xa0 && b <= 0xbf) {
    h->kind = HEAD_STR;
    h->body = b & 0x1f;
    return true;
  }
  switch (b) {
  case 0xc1:
    h->kind = HEAD_BAD;
    return true;
  case 0xc4:
  case 0xc5:
  case 0xc6:
    h->kind = HEAD_BIN;
    lenw = (size_t)1 << (b - 0xc4);
    break;
  case 0xc7:
  case 0xc8:
  case 0xc9:
    h->kind = HEAD_EXT;
    lenw = (size_t)1 << (b - 0xc7);
    break;
  case 0xca:
    h->body = 4;
    return true;
  case 0xcb:
    h->body = 8;
    return true;
  case 0xcc:
  case 0xcd:
  case 0xce:
  case 0xcf:
    h->body = (uint64_t)1 << (b - 0xcc);
    return true;
  case 0xd0:
  case 0xd1:
  case 0xd2:
  case 0xd3:
    h->body = (uint64_t)1 << (b - 0xd0);
    return true;
  case 0xd4:
  case 0xd5:
  case 0xd6:
  case 0xd7:
  case 0xd8:
    /* fixext: a type byte, then 1, 2, 4, 8 or 16 bytes. */
    h->kind = HEAD_EXT;
    h->body = 1 + ((uint64_t)1 << (b - 0xd4));
    return true;
  case 0xd9:
  case 0xda:
  case 0xdb:
    h->kind = HEAD_STR;
    lenw = (size_t)1 << (b - 0xd9);
    break;
  case 0xdc:
  case 0xdd:
    h->kind = HEAD_ARRAY;
    lenw = b == 0xdc ? 2 : 4;
    break;
  default: /* 0xde, 0xdf */
    h->kind = HEAD_MAP;
    lenw = b == 0xde ? 2 : 4;
    break;
  }
  if (avail < 1 + lenw)
    return false;
  uint64_t n = be(p + 1, lenw);
  h->hlen = 1 + lenw;
  if (h->kind == HEAD_ARRAY || h->kind == HEAD_MAP) {
    h->count = n;
  } else if (h->kind == HEAD_EXT) {
    h->body = n + 1; /* the type byte comes after the length */
  } else {
    h->body = n;
  }
  return true;
}

static const char *head_name(const head *h, uint8_t first) {
  switch (h->kind) {
  case HEAD_STR:
    return "a string";
  case HEAD_BIN:
    return "bin";
  case HEAD_EXT:
    return "an ext value";
  case HEAD_ARRAY:
    return "an array";
  case HEAD_MAP:
    return "a map";
  case HEAD_BAD:
    return "the byte 0xc1";
  case HEAD_SCALAR:
    break;
  }
  if (first == 0xc0)
    return "nil";
  if (first == 0xc2 || first == 0xc3)
    return "a boolean";
  if (first == 0xca || first == 0xcb)
    return "a float";
  return "an integer";
}

/* ---- Duplicate keys ---------------------------------------------------- */

/* Small maps (nearly all of them) compare each new key with the ones before
 * it; larger maps collect their keys in a scratch zone and sort them once,
 * so a map of 100,000 keys costs n log n, not n squared. */
#define INLINE_KEYS 8

typedef struct keyref {
  const uint8_t *p;
  size_t n;
} keyref;

typedef struct frame {
  bool is_map;
  uint64_t left; /* values still to read: twice the pairs for a map */
  keyref *keys;  /* the inline array or zone memory */
  size_t nkeys;
  keyref inline_keys[INLINE_KEYS];
} frame;

static int keyref_cmp(const void *a, const void *b) {
  const keyref *x = a, *y = b;
  size_t n = x->n < y->n ? x->n : y->n;
  int c = n ? memcmp(x->p, y->p, n) : 0;
  if (c != 0)
    return c;
  return (x->n > y->n) - (x->n < y->n);
}

static void dup_err(const keyref *k, char *err, size_t errcap) {
  char q[200];
  sc_quote(q, sizeof q, k->p, k->n);
  nb_errf(err, errcap, "a map holds the key %s twice", q);
}

/* ---- The walk ---------------------------------------------------------- */

typedef struct walker {
  frame frames[SC_MAX_REPLY_DEPTH];
  size_t depth;
  msgpack_zone *scratch; /* created on the first large map */
} walker;

/* Opens a container frame. The caller has checked the depth. */
static int push(walker *w, bool is_map, uint64_t count, char *err,
                size_t errcap) {
  frame *f = &w->frames[w->depth++];
  f->is_map = is_map;
  f->left = is_map ? 2 * count : count;
  f->nkeys = 0;
  f->keys = f->inline_keys;
  if (is_map && count > INLINE_KEYS) {
    if (w->scratch == NULL)
      w->scratch = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    /* count is bounded by the buffer's length (the pending rule), so
     * this multiplication cannot overflow. */
    f->keys = w->scratch
                  ? msgpack_zone_malloc(w->scratch, count * sizeof(keyref))
                  : NULL;
    if (f->keys == NULL) {
      nb_errf(err, errcap, "out of memory while checking a map's keys");
      return NIMBUS_ENOMEM;
    }
  }
  return 0;
}

static int add_key(frame *f, const uint8_t *p, size_t n, char *err,
                   size_t errcap) {
  keyref k = {p, n};
  if (f->keys == f->inline_keys) {
    for (size_t i = 0; i < f->nkeys; i++) {
      if (keyref_cmp(&f->keys[i], &k) == 0) {
        dup_err(&k, err, errcap);
        return NIMBUS_EPROTO;
      }
    }
  }
  f->keys[f->nkeys++] = k;
  return 0;
}

/* Closes a frame whose values have all been read. */
static int pop(walker *w, char *err, size_t errcap) {
  frame *f = &w->frames[--w->depth];
  if (f->is_map && f->keys != f->inline_keys && f->nkeys > 1) {
    qsort(f->keys, f->nkeys, sizeof(keyref), keyref_cmp);
    for (size_t i = 1; i < f->nkeys; i++) {
      if (keyref_cmp(&f->keys[i - 1], &f->keys[i]) == 0) {
        dup_err(&f->keys[i], err, errcap);
        return NIMBUS_EPROTO;
      }
    }
  }
  return 0;
}

int sc_walk(const uint8_t *buf, size_t len, const sc_walk_limits *lim,
            char *err, size_t errcap) {
  walker w;
  w.depth = 0;
  w.scratch = NULL;
  size_t max_depth =
      lim->max_depth < SC_MAX_REPLY_DEPTH ? lim->max_depth : SC_MAX_REPLY_DEPTH;
  size_t pos = 0, values = 0;
  uint64_t pending = 1; /* declared values not read yet: the root */
  int rc = NIMBUS_EPROTO;

  if (buf == NULL || len == 0) {
    nb_errf(err, errcap, "the message is empty");
    goto fail;
  }
  while (pending > 0) {
    head h;
    if (!read_head(buf + pos, len - pos, &h)) {
      nb_errf(err, errcap, MSG_TRUNCATED);
      goto fail;
    }
    if (h.kind == HEAD_BAD) {
      nb_errf(err, errcap, "the byte 0xc1 is not valid msgpack");
      goto fail;
    }
    if (h.kind == HEAD_EXT) {
      nb_errf(err, errcap,
              "the message holds a msgpack ext value, which this protocol "
              "does not use");
      goto fail;
    }
    if (++values > lim->max_values) {
      nb_errf(err, errcap, "the message holds more than %zu values",
              lim->max_values);
      goto fail;
    }
    pending--;
    frame *top = w.depth ? &w.frames[w.depth - 1] : NULL;
    bool is_key = top && top->is_map && top->left % 2 == 0;
    if (is_key && h.kind != HEAD_STR) {
      nb_errf(err, errcap, "a map key must be a string, not %s",
              head_name(&h, buf[pos]));
      goto fail;
    }
    if (top)
      top->left--;
    pos += h.hlen;
    if (h.kind == HEAD_ARRAY || h.kind == HEAD_MAP) {
      bool is_map = h.kind == HEAD_MAP;
      if (w.depth + 1 > max_depth) {
        nb_errf(err, errcap, "nesting deeper than %zu levels", max_depth);
        goto fail;
      }
      pending += is_map ? 2 * h.count : h.count;
      if (pending > len - pos) {
        nb_errf(err, errcap, MSG_TRUNCATED);
        goto fail;
      }
      rc = push(&w, is_map, h.count, err, errcap);
      if (rc != 0)
        goto fail;
      rc = NIMBUS_EPROTO;
    } else {
      if (h.body > len - pos) {
        nb_errf(err, errcap, MSG_TRUNCATED);
        goto fail;
      }
      if (h.kind == HEAD_STR && h.body > SC_MAX_STR) {
        nb_errf(err, errcap, "a string is longer than %d bytes", SC_MAX_STR);
        goto fail;
      }
      if (is_key && add_key(top, buf + pos, (size_t)h.body, err, errcap))
        goto fail;
      pos += (size_t)h.body;
    }
    /* Everything still declared must fit in what remains. */
    if (pending > len - pos) {
      nb_errf(err, errcap, MSG_TRUNCATED);
      goto fail;
    }
    while (w.depth > 0 && w.frames[w.depth - 1].left == 0) {
      rc = pop(&w, err, errcap);
      if (rc != 0)
        goto fail;
      rc = NIMBUS_EPROTO;
    }
  }
  if (pos != len) {
    size_t extra = len - pos;
    nb_errf(err, errcap, "the message has %zu byte%s after its end", extra,
            extra == 1 ? "" : "s");
    goto fail;
  }
  if (w.scratch)
    msgpack_zone_free(w.scratch);
  return 0;

fail:
  if (w.scratch)
    msgpack_zone_free(w.scratch);
  return rc;
}

/* ---- Finding the id of a broken task ----------------------------------- */

/* Skips one value of any kind, ext included, checking nothing but lengths;
 * needs no stack because a single count of declared values suffices. */
static bool skip_lenient(const uint8_t *buf, size_t len, size_t *pos) {
  uint64_t pending = 1;
  while (pending > 0) {
    head h;
    if (*pos >= len || !read_head(buf + *pos, len - *pos, &h) ||
        h.kind == HEAD_BAD)
      return false;
    pending--;
    *pos += h.hlen;
    if (h.kind == HEAD_ARRAY || h.kind == HEAD_MAP) {
      pending += h.kind == HEAD_MAP ? 2 * h.count : h.count;
      if (pending > len - *pos)
        return false;
    } else {
      if (h.body > len - *pos)
        return false;
      *pos += (size_t)h.body;
    }
  }
  return true;
}

void sc_salvage_id(const uint8_t *buf, size_t len, char *out) {
  const uint8_t *cand = NULL;
  size_t cand_n = 0, seen = 0, pos = 0;
  head h;
  out[0] = '\0';
  if (buf == NULL || !read_head(buf, len, &h) || h.kind != HEAD_MAP)
    return;
  pos = h.hlen;
  for (uint64_t i = 0; i < h.count; i++) {
    head k;
    if (pos >= len || !read_head(buf + pos, len - pos, &k))
      break;
    bool is_id = k.kind == HEAD_STR && k.body == 2 && k.hlen + 2 <= len - pos &&
                 buf[pos + k.hlen] == 'i' && buf[pos + k.hlen + 1] == 'd';
    if (!skip_lenient(buf, len, &pos))
      break;
    if (is_id) {
      head v;
      seen++;
      if (pos < len && read_head(buf + pos, len - pos, &v) &&
          v.kind == HEAD_STR && v.body <= len - pos - v.hlen) {
        cand = buf + pos + v.hlen;
        cand_n = (size_t)v.body;
      }
    }
    if (!skip_lenient(buf, len, &pos))
      break;
  }
  /* An id given twice is no id at all: which one would the reply echo? */
  if (seen == 1 && cand && sc_id_valid((const char *)cand, cand_n)) {
    memcpy(out, cand, cand_n);
    out[cand_n] = '\0';
  }
}

/* ---- Small helpers ----------------------------------------------------- */

void sc_quote(char *out, size_t cap, const uint8_t *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0, shown = n > 40 ? 40 : n;
  if (cap < 8) {
    if (cap > 0)
      out[0] = '\0';
    return;
  }
  out[o++] = '"';
  for (size_t i = 0; i < shown; i++) {
    uint8_t c = p[i];
    if (o + 8 >= cap)
      break;
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out[o++] = (char)c;
    } else {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  out[o++] = '"';
  if (shown < n && o + 4 < cap) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
}

bool sc_id_valid(const char *s, size_t n) {
  if (s == NULL || n < SC_ID_MIN || n > SC_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return false;
  }
  return true;
}

int sc_check_packed_map(const uint8_t *p, size_t n, size_t msg_depth) {
  sc_walk_limits lim = {msg_depth - 1, SC_MAX_VALUES};
  if (p == NULL || n == 0 ||
      !((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
    return NIMBUS_EINVAL;
  int rc = sc_walk(p, n, &lim, NULL, 0);
  return rc == NIMBUS_EPROTO ? NIMBUS_EINVAL : rc;
}
