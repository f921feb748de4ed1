/* Clocks, random identifiers, hex and identifier checks shared by every
 * Nimbus executable and library. */
#include "nb_util.h"
#include "nimbus/errors.h"

#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

int64_t nb_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t nb_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void nb_malloc_for_segments(void) {
  (void)mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
  (void)mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}

/* Random bytes come from a small pool per thread, refilled from OpenSSL
 * 512 bytes at a time: every RAND_bytes call asks the kernel for the
 * process id (OpenSSL's fork check) and takes the generator's lock, which
 * at thousands of task ids a second was a system call per task. A fork
 * bumps rand_gen in the child, so no pool is ever shared by two
 * processes. */
#define RAND_POOL 512

static atomic_uint rand_gen = 1;
static pthread_once_t rand_once = PTHREAD_ONCE_INIT;
static _Thread_local struct {
  unsigned gen;
  size_t used;
  unsigned char bytes[RAND_POOL];
} rand_pool;

static void rand_forked(void) { atomic_fetch_add(&rand_gen, 1); }

static void rand_init(void) { (void)pthread_atfork(NULL, NULL, rand_forked); }

int nb_random_bytes(void *buf, size_t n) {
  if (n > (size_t)0x7fffffff)
    return NIMBUS_EINVAL;
  if (n > RAND_POOL / 4)
    return RAND_bytes(buf, (int)n) == 1 ? 0 : NIMBUS_ESYS;
  (void)pthread_once(&rand_once, rand_init);
  unsigned gen = atomic_load(&rand_gen);
  if (rand_pool.gen != gen || RAND_POOL - rand_pool.used < n) {
    if (RAND_bytes(rand_pool.bytes, RAND_POOL) != 1)
      return NIMBUS_ESYS;
    rand_pool.gen = gen;
    rand_pool.used = 0;
  }
  unsigned char *from = rand_pool.bytes + rand_pool.used;
  memcpy(buf, from, n);
  OPENSSL_cleanse(from, n); /* handed out once, kept nowhere */
  rand_pool.used += n;
  return 0;
}

int nb_random_id(char *out, size_t cap, unsigned bits) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t chars = (bits + 5) / 6;
  if (cap < chars + 1 || chars > 128)
    return NIMBUS_EINVAL;
  unsigned char raw[128];
  if (nb_random_bytes(raw, chars) != 0)
    return NIMBUS_ESYS;
  for (size_t i = 0; i < chars; i++)
    out[i] = alphabet[raw[i] & 63];
  out[chars] = '\0';
  return 0;
}

bool nb_is_lower_hex(const char *s, size_t n) {
  if (s == NULL || n == 0)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return true;
}

bool nb_is_sha256_hex(const char *s) {
  return s != NULL && strnlen(s, 65) == 64 && nb_is_lower_hex(s, 64);
}

static int nibble(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int nb_unhex32(const char *s, uint8_t out[32]) {
  for (size_t i = 0; i < 32; i++) {
    int hi = nibble(s[2 * i]), lo = hi < 0 ? -1 : nibble(s[2 * i + 1]);
    if (lo < 0)
      return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

void nb_hex(const uint8_t *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = '\0';
}

void nb_sha256(const void *in, size_t n, uint8_t out[32]) {
  SHA256(in, n, out);
}

static bool token_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '-';
}

bool nb_valid_terminal(const char *s, size_t n) {
  if (s == NULL || n < 1 || n > 64)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!token_char(s[i]) && s[i] != '.')
      return false;
  return true;
}

bool nb_valid_token(const char *s, size_t n, size_t min, size_t max) {
  if (s == NULL || n < min || n > max)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!token_char(s[i]))
      return false;
  return true;
}

size_t nb_strlcpy(char *dst, const char *src, size_t cap) {
  size_t len = strlen(src);
  if (cap > 0) {
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
  }
  return len;
}
