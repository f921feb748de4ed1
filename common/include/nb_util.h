/* Small helpers shared by the agent, the worker and the tools: clocks,
 * random identifiers, hex, SHA-256, identifier validation. */
#ifndef NB_UTIL_H
#define NB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t nb_now_ms(void);
/* Milliseconds from an arbitrary fixed point (CLOCK_MONOTONIC). */
int64_t nb_mono_ms(void);

/* Fills `buf` with `n` cryptographically random bytes (OpenSSL RAND;
 * requests of up to 128 bytes are served from a 512-byte pool per thread,
 * refilled as it runs out and after a fork). Any thread. Returns 0,
 * NIMBUS_EINVAL (n over 2^31 - 1) or NIMBUS_ESYS. */
int nb_random_bytes(void *buf, size_t n);

/* Writes a random URL-safe identifier of `bits` random bits (a multiple of
 * 6 is exact; others round up) into `out`, NUL-terminated. `cap` is the
 * size of `out` in bytes. Returns 0, NIMBUS_EINVAL if `out` is too small,
 * or NIMBUS_ESYS. The alphabet is [A-Za-z0-9_-]. */
int nb_random_id(char *out, size_t cap, unsigned bits);

/* Lowercase hex of `n` bytes into `out`, which must hold 2n+1 bytes. */
void nb_hex(const uint8_t *in, size_t n, char *out);

/* True when the `n` bytes at `s` are all lowercase hex digits ([0-9a-f])
 * and n > 0. */
bool nb_is_lower_hex(const char *s, size_t n);
/* True when `s` (NUL-terminated; NULL gives false) is a SHA-256 in the
 * protocol's form: exactly 64 lowercase hex digits (a blob's name). */
bool nb_is_sha256_hex(const char *s);

/* Decodes the 64 hex digits (either case) at `s` (need not end there)
 * into out[32]. Returns 0, or -1 at the first other character (out is
 * then partly written). */
int nb_unhex32(const char *s, uint8_t out[32]);

/* Tunes glibc malloc for a process that moves 256 KiB segments: blocks
 * up to 4 MiB come from the heap rather than a fresh mmap each, and up to
 * 64 MiB of freed heap is kept for reuse. Without it every segment buffer
 * (ours and Paho's) is a new mapping whose 64 pages each fault on first
 * touch and are unmapped again on free, which on a VM cost more CPU than
 * the bytes themselves (tests/bench/README.md). Call once, early in main,
 * before threads start; a library never calls it for its host. Errors are
 * ignored (the defaults stay). */
void nb_malloc_for_segments(void);

/* SHA-256 of `n` bytes at `in` into `out[32]`. */
void nb_sha256(const void *in, size_t n, uint8_t out[32]);

/* XXH3-128 of `n` bytes at `in` into `out[16]` (xxhash's canonical, big-
 * endian form): a check against accidents (damage on disk, a changed
 * re-send), 16 GB/s against SHA-256's 1.6 GB/s on this machine's CPU
 * (which has SHA extensions); never where a party could gain by finding a
 * collision. Cannot fail. */
void nb_xxh128(const void *in, size_t n, uint8_t out[16]);

/* True when `s` (length `n`) is 1-64 bytes of [A-Za-z0-9._-]: a terminal
 * id (PROTOCOL.md, Transport and identity). */
bool nb_valid_terminal(const char *s, size_t n);
/* True when `s` is `min`..`max` bytes of [A-Za-z0-9_-]: task ids (16-64),
 * device ids (8-64), upload names (1-64). */
bool nb_valid_token(const char *s, size_t n, size_t min, size_t max);

/* True when `s` (length `n`, no NUL needed) is well-formed UTF-8: no
 * overlong forms, no surrogates, nothing above U+10FFFF. */
bool nb_valid_utf8(const char *s, size_t n);

/* True when code point `cp` is a control character (Unicode category Cc):
 * U+0000-U+001F, U+007F or U+0080-U+009F. */
bool nb_is_control(unsigned cp);

/* The one check of free text a terminal names things with (item names,
 * labels, every other name field; schemas/SPEC.md): `s` (length `n`, no
 * NUL needed, borrowed; NULL only with n 0) must be well-formed UTF-8 (as
 * nb_valid_utf8) holding no control character (nb_is_control, so C1 and
 * NUL too). Returns NULL when it is, else "is not valid UTF-8" or "holds a
 * control character" (static storage), for a sentence that starts with
 * the field's name. */
const char *nb_text_problem(const char *s, size_t n);

/* Longest item name a snapshot accepts (PROTOCOL.md, Backup and restore). */
#define NB_RELPATH_MAX 4096
/* Longest component of an item name: NAME_MAX of every filesystem restore
 * may write to (ext4, xfs, btrfs, tmpfs, and 255 UTF-16 units or more on
 * the others), so that every accepted name can be laid out. */
#define NB_COMPONENT_MAX 255

/* Checks that `s` (length `n`) is a safe relative path of a snapshot item:
 * 1..NB_RELPATH_MAX bytes that pass nb_text_problem, components separated
 * by single '/', no leading or trailing '/', no empty, "." or ".."
 * component, none longer than NB_COMPONENT_MAX bytes. Returns NULL when it
 * is, else a short phrase for a person saying why not (static storage),
 * e.g. "has a \"..\" component". */
const char *nb_relpath_problem(const char *s, size_t n);

/* Compares two item names in path order: bytewise, except that '/' sorts
 * below every other byte, and a name before every longer name it is a
 * prefix of. Sorted so, the names inside a directory "d" ("d/...") come
 * right after "d" itself, before "d-x" or "d.x"; so a name that is also
 * the directory of another name is followed at once by such a name, and
 * one pass over neighbours finds every clash (nb_relpath_within) and every
 * duplicate. Returns <0, 0 or >0; arguments are borrowed. */
int nb_relpath_cmp(const char *a, size_t an, const char *b, size_t bn);

/* True when the name `s` (n bytes) lies inside the directory `dir` (dn
 * bytes), i.e. starts with dir followed by '/'. Borrowed, no NUL needed. */
bool nb_relpath_within(const char *dir, size_t dn, const char *s, size_t n);

/* Formats into `buf` (cap bytes, always NUL-terminated, truncated when
 * long); a NULL buf or zero cap is a no-op. For functions that report
 * failures in a caller's error buffer. */
void nb_errf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes all `n` bytes of `p` to `fd`, retrying on EINTR and short writes.
 * Returns 0, or -1 with errno set. */
int nb_write_all(int fd, const void *p, size_t n);

/* Copies at most cap-1 bytes of `src` into `dst` and NUL-terminates it.
 * Returns the length of `src`; a result >= cap means it was truncated. */
size_t nb_strlcpy(char *dst, const char *src, size_t cap);

#endif
