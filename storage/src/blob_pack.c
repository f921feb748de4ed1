/* The blob store's compressed form (st_blob.h, "Compressed storage"): a
 * stored blob kept as zstd frames, one per segment, behind an index, so
 * that a ranged read (blob.get asks at most one segment, two when it
 * straddles) decompresses one frame or two, never the blob from its
 * start; the switch of a blob into that form (st_blobstore_pack); and the
 * reader every read of the store goes through (st_bin), which gives a
 * blob's bytes whichever form it is in.
 *
 * Written on libzstd's one-shot frame calls rather than a seekable
 * library: zstd's own seekable format lives in its contrib/ tree, which
 * Debian's libzstd does not ship, and with segments of a fixed size an
 * index of frame offsets is all a seek needs. The form, numbers
 * little-endian:
 *   0   8  magic "NBZSTD", 0, 1 (version 1)
 *   8   8  the blob's size in bytes
 *   16  8  this form's size in bytes (the object's length)
 *   24  4  the segment size, 262144
 *   28  4  0
 *   32 32  the blob's SHA-256, its name
 *   64     nsegs + 1 offsets (8 bytes each) of the frames in the object;
 *          the last is the object's length
 *   then   frame i: one zstd frame of segment i, with its content size and
 *          zstd's checksum (XXH64) of its content
 * The head (the first 64 bytes) names the blob: a blob kept as it is would
 * have to hold its own SHA-256 at bytes 32-63 to pass for this form, so a
 * reader tells the forms apart by the head alone, without Redis, and
 * whatever is on disk after a crash reads right. While it is written, the
 * new form is a staging object whose name no upload can have (the SHA-256
 * of a string holding a byte no terminal id holds, the blob and random
 * bytes): two packers of one blob never write into the same object, and
 * what a crash leaves half written is swept with the abandoned uploads. */
#include "st_blob_internal.h"

#include "nb_util.h"
#include "nimbus/errors.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

static const uint8_t MAGIC[8] = {'N', 'B', 'Z', 'S', 'T', 'D', 0, 1};

/* Where the index begins: right after the head. */
#define INDEX_AT ST_BLOB_HEAD
/* The compressed frames go to the backend in writes of about this many
 * bytes (each one write and one fdatasync there). */
#define WRITE_RUN ((size_t)4 << 20)
/* The blob is read this many segments at a time (4 MiB). */
#define READ_SEGS 16
/* The level of the trial: zstd's fastest regular one. */
#define TRIAL_LEVEL 1

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* The offset of the first frame: the head and the index before it. */
static uint64_t frames_at(uint64_t size) {
  return INDEX_AT + 8 * (st_blob_nsegs(size) + 1);
}

/* Parses a head of blob `hash`: false unless it is one, whole and sane. */
static bool head_parse(const uint8_t *h, size_t n, const uint8_t hash[32],
                       uint64_t *size, uint64_t *stored) {
  if (n < ST_BLOB_HEAD || memcmp(h, MAGIC, sizeof MAGIC) != 0 ||
      get32(h + 24) != ST_SEGMENT || get32(h + 28) != 0 ||
      memcmp(h + 32, hash, 32) != 0)
    return false;
  uint64_t sz = get64(h + 8), st = get64(h + 16);
  /* A size whose index would not fit in 64 bits is no head of ours. */
  if (sz == 0 || sz > UINT64_MAX / 2 || st < frames_at(sz))
    return false;
  *size = sz;
  *stored = st;
  return true;
}

bool st_blob_head_packed(const uint8_t *head, size_t n, const uint8_t hash[32],
                         uint64_t size, uint64_t length) {
  uint64_t sz = 0, st = 0;
  return head_parse(head, n, hash, &sz, &st) && sz == size && st == length;
}

/* ---- Reading ------------------------------------------------------------- */

/* Reads the head of the object open in b, which should be blob `name`,
 * through the backend's cache: b->packed when it is the compressed form.
 * A blob shorter than the head is one kept as it is, and so is one whose
 * first bytes are not the magic and then, at 32, the blob's own name (no
 * blob's bytes hold their own SHA-256). A head that does have both but
 * whose other fields do not parse is a compressed form damaged:
 * NIMBUS_EIO, never its compressed bytes served as the blob's. */
static int bin_head(st_bin *b, const uint8_t name[32]) {
  uint8_t h[ST_BLOB_HEAD];
  size_t got = 0;
  while (got < sizeof h) {
    size_t k = 0;
    int rc = b->ops->read(b->rd, got, h + got, sizeof h - got, &k);
    if (rc != 0)
      return rc;
    if (k == 0)
      break;
    got += k;
  }
  b->packed = head_parse(h, got, name, &b->size, &b->stored);
  if (!b->packed && got == sizeof h && memcmp(h, MAGIC, sizeof MAGIC) == 0 &&
      memcmp(h + 32, name, 32) == 0) {
    st_blob_set_err("%.200s: the head of its compressed form is damaged",
                    b->rd->what);
    return NIMBUS_EIO;
  }
  return 0;
}

int st__bin_open(st_blobstore *s, st_blob_ns ns, const uint8_t name[32],
                 unsigned flags, st_bin *b) {
  memset(b, 0, sizeof *b);
  b->ops = s->ops;
  b->seg_at = UINT64_MAX;
  int rc = s->ops->read_open(s->be, ns, name, flags, &b->rd);
  if (rc != 0) {
    b->rd = NULL;
    return rc;
  }
  if (ns != ST_BLOB_STORE)
    return 0; /* staging holds uploads as they came */
  if ((rc = bin_head(b, name)) != 0)
    st__bin_close(b);
  return rc;
}

void st__bin_close(st_bin *b) {
  if (b->rd != NULL)
    b->ops->read_close(b->rd);
  ZSTD_freeDCtx(b->dctx);
  free(b->frame);
  free(b->seg);
  memset(b, 0, sizeof *b);
}

static int damaged(const st_bin *b, uint64_t seg, const char *why) {
  st_blob_set_err("%.200s: segment %llu of its compressed form is damaged "
                  "(%s)",
                  b->rd->what, (unsigned long long)seg, why);
  return NIMBUS_EIO;
}

/* Exactly `n` bytes at `off` of the object into buf. */
static int raw_read(const st_bin *b, uint64_t seg, uint64_t off, void *buf,
                    size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t k = 0;
    int rc = b->ops->read(b->rd, off + got, (uint8_t *)buf + got, n - got, &k);
    if (rc != 0)
      return rc;
    if (k == 0)
      return damaged(b, seg, "the file is cut short");
    got += k;
  }
  return 0;
}

/* Decompresses segment `i` (`len` bytes) into dst. */
static int frame_load(st_bin *b, uint64_t i, uint8_t *dst, size_t len) {
  size_t cap = ZSTD_compressBound(ST_SEGMENT);
  if (b->dctx == NULL && (b->dctx = ZSTD_createDCtx()) == NULL)
    return NIMBUS_ENOMEM;
  if (b->frame == NULL && (b->frame = malloc(cap)) == NULL)
    return NIMBUS_ENOMEM;
  uint8_t ix[16];
  int rc = raw_read(b, i, INDEX_AT + 8 * i, ix, sizeof ix);
  if (rc != 0)
    return rc;
  uint64_t a = get64(ix), e = get64(ix + 8);
  if (a < frames_at(b->size) || e <= a || e > b->stored || e - a > cap)
    return damaged(b, i, "its place in the index is impossible");
  if ((rc = raw_read(b, i, a, b->frame, (size_t)(e - a))) != 0)
    return rc;
  size_t out =
      ZSTD_decompressDCtx(b->dctx, dst, len, b->frame, (size_t)(e - a));
  if (ZSTD_isError(out))
    return damaged(b, i, ZSTD_getErrorName(out));
  if (out != len)
    return damaged(b, i, "it holds fewer bytes than the segment");
  return 0;
}

int st__bin_read(st_bin *b, uint64_t offset, void *buf, size_t n, size_t *got) {
  *got = 0;
  if (!b->packed)
    return b->ops->read(b->rd, offset, buf, n, got);
  if (offset >= b->size || n == 0)
    return 0;
  uint64_t i = offset / ST_SEGMENT, start = i * ST_SEGMENT;
  size_t len =
      b->size - start < ST_SEGMENT ? (size_t)(b->size - start) : ST_SEGMENT;
  size_t skip = (size_t)(offset - start);
  size_t take = n < len - skip ? n : len - skip;
  int rc = 0;
  if (skip == 0 && take == len) {
    /* A whole segment (what hashing and blob.get ask): straight in. */
    if ((rc = frame_load(b, i, buf, len)) == 0)
      *got = len;
    return rc;
  }
  if (b->seg_at != i) {
    if (b->seg == NULL && (b->seg = malloc(ST_SEGMENT)) == NULL)
      return NIMBUS_ENOMEM;
    b->seg_at = UINT64_MAX;
    if ((rc = frame_load(b, i, b->seg, len)) != 0)
      return rc;
    b->seg_at = i;
  }
  memcpy(buf, b->seg + skip, take);
  *got = take;
  return 0;
}

int st__bin_read_all(st_bin *b, uint64_t offset, void *buf, size_t n,
                     size_t *got) {
  int rc = 0;
  *got = 0;
  while (*got < n) {
    size_t k = 0;
    if ((rc = st__bin_read(b, offset + *got, (char *)buf + *got, n - *got,
                           &k)) != 0 ||
        k == 0)
      break;
    *got += k;
  }
  return rc;
}

int st_blobstore_stored(st_blobstore *s, const uint8_t hash[32], uint64_t size,
                        uint64_t *stored) {
  st_bin in;
  int rc = st__bin_open(s, ST_BLOB_STORE, hash, 0, &in);
  if (rc != 0)
    return rc;
  *stored = in.packed ? in.stored : size;
  st__bin_close(&in);
  return 0;
}

/* ---- Packing ------------------------------------------------------------- */

typedef struct packer {
  st_blobstore *s;
  uint8_t name[32]; /* the staging name of the new form */
  bool staged;      /* something was written under it */
  ZSTD_CCtx *cctx;
  uint8_t *in; /* READ_SEGS segments, aligned */
  size_t in_cap;
  uint8_t *out; /* frames not yet written */
  size_t out_len, out_cap;
  uint64_t at;     /* where out[0] goes in the new form */
  uint64_t *index; /* nsegs + 1 frame offsets */
} packer;

/* The staging name of a new form of `hash`. An upload's is the SHA-256 of
 * "<terminal>\n<upload>", and no terminal id holds the byte 0x01. */
static int pack_name(const uint8_t hash[32], uint8_t name[32]) {
  char key[160], hex[65], rnd[32];
  nb_hex(hash, 32, hex);
  if (nb_random_id(rnd, sizeof rnd, 132) != 0) {
    st_blob_set_err("no source of randomness for a staging name");
    return NIMBUS_ESYS;
  }
  int n = snprintf(key, sizeof key, "\001pack\n%s\n%s", hex, rnd);
  nb_sha256(key, (size_t)n, name);
  return 0;
}

static int pack_write(packer *p, uint64_t at, const void *buf, size_t n) {
  /* The staging entry need not be durable: only the exchange into the
   * blob's place has to be (stage_replace fsyncs the file and the
   * store's directory); a staging object lost in a crash leaves the blob
   * as it was. */
  /* Staged from the first try on: a write that fails may have made the
   * object, and part of it, which packer_fini then drops. */
  p->staged = true;
  int rc = p->s->ops->stage_write(p->s->be, p->name, at, buf, n, 0, true);
  st__blob_note_write(p->s, rc);
  return rc;
}

static int pack_flush(packer *p) {
  if (p->out_len == 0)
    return 0;
  int rc = pack_write(p, p->at, p->out, p->out_len);
  p->at += p->out_len;
  p->out_len = 0;
  return rc;
}

/* Compresses `n` bytes at `src` into one frame at the end of p->out,
 * setting *len to its size. */
static int frame_make(packer *p, const uint8_t *src, size_t n, size_t *len) {
  size_t k = ZSTD_compress2(p->cctx, p->out + p->out_len,
                            p->out_cap - p->out_len, src, n);
  if (ZSTD_isError(k)) {
    st_blob_set_err("zstd: %s", ZSTD_getErrorName(k));
    return NIMBUS_ENOMEM; /* with room for the bound, only memory fails */
  }
  *len = k;
  return 0;
}

/* The first run's segments of the trial (up to ST_BLOB_TRIAL bytes at
 * TRIAL_LEVEL): true when they shrink by at least 10%. The frames are
 * made in p->out and dropped. */
static int trial_ok(packer *p, const uint8_t *buf, size_t n, int level,
                    bool *ok) {
  size_t total = 0;
  int rc = 0;
  if (ZSTD_isError(ZSTD_CCtx_setParameter(p->cctx, ZSTD_c_compressionLevel,
                                          TRIAL_LEVEL)))
    return NIMBUS_ENOMEM;
  for (size_t at = 0; at < n && rc == 0; at += ST_SEGMENT) {
    size_t len = 0;
    rc = frame_make(p, buf + at, n - at < ST_SEGMENT ? n - at : ST_SEGMENT,
                    &len);
    total += len;
  }
  if (rc == 0 && ZSTD_isError(ZSTD_CCtx_setParameter(
                     p->cctx, ZSTD_c_compressionLevel, level)))
    rc = NIMBUS_ENOMEM;
  *ok = total <= n - n / 10;
  return rc;
}

/* Reads exactly [off, off + n) of the blob into p->in (whole 4096-byte
 * blocks asked, so the backend may read past its cache). */
static int read_run(packer *p, st_bin *in, uint64_t off, size_t n) {
  size_t want = (n + 4095) & ~(size_t)4095, got = 0;
  while (got < n) {
    size_t k = 0;
    int rc = st__bin_read(in, off + got, p->in + got, want - got, &k);
    if (rc != 0)
      return rc;
    if (k == 0) {
      st_blob_set_err("%.200s is shorter than it should be", in->rd->what);
      return NIMBUS_EIO;
    }
    got += k;
  }
  return 0;
}

/* Reads the new form back from its staging object as a reader of the
 * blob would, and checks that it gives the blob: a head of `size` bytes
 * of blob `hash`, every frame whole, the bytes hashing to the name. The
 * old form is the blob's only copy, so nothing takes its place unchecked:
 * a staging object that lost writes (swept as abandoned and made again
 * by a later write, holes where frames were) or was damaged otherwise
 * fails here, NIMBUS_EIO, and the blob stays as it was. */
static int pack_verify(packer *p, const uint8_t hash[32], uint64_t size) {
  st_bin v;
  int rc =
      st__bin_open(p->s, ST_BLOB_STAGING, p->name, ST_BLOB_RD_UNCACHED, &v);
  if (rc != 0)
    return rc == NIMBUS_ENOTFOUND ? NIMBUS_EIO : rc;
  if ((rc = bin_head(&v, hash)) == 0 && (!v.packed || v.size != size)) {
    st_blob_set_err("the compressed form of %.200s did not read back whole",
                    v.rd->what);
    rc = NIMBUS_EIO;
  }
  EVP_MD_CTX *md = rc == 0 ? EVP_MD_CTX_new() : NULL;
  if (rc == 0 && (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1))
    rc = NIMBUS_ENOMEM;
  for (uint64_t off = 0; rc == 0 && off < size;) {
    size_t got = 0;
    size_t want = size - off < p->in_cap ? (size_t)(size - off) : p->in_cap;
    /* Whole segments: each frame decompresses straight into p->in. */
    if ((rc = st__bin_read_all(&v, off, p->in, want, &got)) == 0 && got != want)
      rc = NIMBUS_EIO;
    if (rc == 0 && EVP_DigestUpdate(md, p->in, want) != 1)
      rc = NIMBUS_ENOMEM;
    off += want;
  }
  uint8_t d[32];
  unsigned dl = 0;
  if (rc == 0 && (EVP_DigestFinal_ex(md, d, &dl) != 1 || dl != 32 ||
                  memcmp(d, hash, 32))) {
    st_blob_set_err("the compressed form of %.200s reads back as other bytes",
                    v.rd->what);
    rc = NIMBUS_EIO;
  }
  EVP_MD_CTX_free(md);
  st__bin_close(&v);
  return rc;
}

static void packer_fini(packer *p) {
  if (p->staged)
    (void)p->s->ops->stage_drop(p->s->be, p->name);
  ZSTD_freeCCtx(p->cctx);
  free(p->in);
  free(p->out);
  free(p->index);
}

int st_blobstore_pack(st_blobstore *s, const uint8_t hash[32], uint64_t size,
                      const st_blob_pack_opts *o, uint64_t *stored) {
  *stored = size;
  /* A size whose index would not fit (a record damaged): no blob's. */
  if (o->level < 1 || o->level > ZSTD_maxCLevel() || size > UINT64_MAX / 2)
    return NIMBUS_EINVAL;
  st_bin in;
  int rc = st__bin_open(s, ST_BLOB_STORE, hash, ST_BLOB_RD_UNCACHED, &in);
  if (rc != 0)
    return rc;
  if (in.packed) {
    if (in.size == size) {
      *stored = in.stored;
    } else {
      st_blob_set_err("%.200s is the compressed form of %llu bytes, not %llu",
                      in.rd->what, (unsigned long long)in.size,
                      (unsigned long long)size);
      rc = NIMBUS_EIO;
    }
    st__bin_close(&in);
    return rc;
  }
  uint64_t nsegs = st_blob_nsegs(size), first = frames_at(size);
  /* The most the compressed form may take: 10% less than the blob. */
  uint64_t limit = size - size / 10;
  if (size == 0 || first >= limit) {
    st__bin_close(&in);
    return 0;
  }
  packer p;
  memset(&p, 0, sizeof p);
  p.s = s;
  uint64_t run = (uint64_t)READ_SEGS * ST_SEGMENT;
  p.in_cap = (size_t)(size < run ? (size + 4095) & ~(uint64_t)4095 : run);
  /* Frames are written once WRITE_RUN bytes are waiting, and stop once
   * they pass the limit (below the size): room for that and one more. */
  p.out_cap = (size < WRITE_RUN ? (size_t)size : WRITE_RUN) +
              ZSTD_compressBound(ST_SEGMENT);
  p.cctx = ZSTD_createCCtx();
  p.out = malloc(p.out_cap);
  p.index = malloc((size_t)(nsegs + 1) * sizeof *p.index);
  if (posix_memalign((void **)&p.in, 4096, p.in_cap) != 0)
    p.in = NULL;
  if (p.cctx == NULL || p.out == NULL || p.index == NULL || p.in == NULL) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  /* Each frame says its content size and carries zstd's checksum of it,
   * so a frame damaged on disk fails to decompress rather than giving
   * other bytes (blob.get checks the segment sums besides). */
  if (ZSTD_isError(
          ZSTD_CCtx_setParameter(p.cctx, ZSTD_c_compressionLevel, o->level)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(p.cctx, ZSTD_c_checksumFlag, 1)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(p.cctx, ZSTD_c_contentSizeFlag, 1))) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  if ((rc = pack_name(hash, p.name)) != 0)
    goto out;
  p.at = first;
  bool shrinks = true;
  uint64_t seg = 0;
  for (uint64_t off = 0; off < size && shrinks; off += run) {
    size_t n = size - off < run ? (size_t)(size - off) : (size_t)run;
    if ((rc = read_run(&p, &in, off, n)) != 0)
      goto out;
    if (off == 0 && o->trial && size > ST_BLOB_TRIAL) {
      size_t t = n < ST_BLOB_TRIAL ? n : (size_t)ST_BLOB_TRIAL;
      if ((rc = trial_ok(&p, p.in, t, o->level, &shrinks)) != 0)
        goto out;
      if (!shrinks)
        break;
    }
    for (size_t at = 0; at < n; at += ST_SEGMENT, seg++) {
      size_t len = 0, k = n - at < ST_SEGMENT ? n - at : ST_SEGMENT;
      p.index[seg] = p.at + p.out_len;
      if ((rc = frame_make(&p, p.in + at, k, &len)) != 0)
        goto out;
      p.out_len += len;
      /* Past the limit already: the rest cannot bring it back. */
      if (p.at + p.out_len > limit) {
        shrinks = false;
        break;
      }
      if (p.out_len >= WRITE_RUN && (rc = pack_flush(&p)) != 0)
        goto out;
      if (o->progress != NULL &&
          (rc = o->progress(o->arg, off + at + k, size)) != 0)
        goto out;
    }
  }
  if (!shrinks)
    goto out; /* stays as it is; *stored is its size */
  if ((rc = pack_flush(&p)) != 0)
    goto out;
  p.index[nsegs] = p.at;
  /* The head and the index last, in one write: until then the object is
   * no compressed form of anything. */
  size_t hlen = (size_t)first;
  uint8_t *h = calloc(1, hlen);
  if (h == NULL) {
    rc = NIMBUS_ENOMEM;
    goto out;
  }
  memcpy(h, MAGIC, sizeof MAGIC);
  put64(h + 8, size);
  put64(h + 16, p.at);
  put32(h + 24, ST_SEGMENT);
  memcpy(h + 32, hash, 32);
  for (uint64_t i = 0; i <= nsegs; i++)
    put64(h + INDEX_AT + 8 * i, p.index[i]);
  rc = pack_write(&p, 0, h, hlen);
  free(h);
  if (rc != 0 || (rc = pack_verify(&p, hash, size)) != 0)
    goto out;
  /* Close the blob's old form before its place is taken: the exchange
   * needs no reader gone, but holding it open keeps its blocks for
   * nothing. */
  st__bin_close(&in);
  rc = s->ops->stage_replace(s->be, p.name, hash);
  if (rc == 0 || rc == NIMBUS_ENOTFOUND)
    p.staged = false; /* moved, or dropped by the backend */
  if (rc == 0)
    *stored = p.index[nsegs];
  else if (rc != NIMBUS_ENOTFOUND)
    /* An error after the exchange (the directory's fsync) leaves the new
     * form in place: what is on disk is the truth. */
    (void)st_blobstore_stored(s, hash, size, stored);
out:
  st__bin_close(&in);
  packer_fini(&p);
  return rc;
}
