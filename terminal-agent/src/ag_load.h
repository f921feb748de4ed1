/* The pure parts of loading the agent (pkg.c), used by the install
 * (update.c), the unit tests (tests/unit/test_update.c) and the fuzz
 * target of the extractor (tests/fuzz/fuzz_extract.c):
 *
 * - the safe extractor of a package archive (libarchive): regular files
 *   and directories only, relative paths without "..", bounded in bytes
 *   and entries, written below one directory with openat and O_NOFOLLOW;
 * - the checks of a package's description against its signature;
 * - the version decision (install, already there, refused).
 *
 * Nothing here keeps state: every function is safe on any thread. */
#ifndef AG_LOAD_H
#define AG_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nimbus/agent.h"

/* At most this many entries in a package (files and directories). */
#define AG_PKG_MAX_ENTRIES 4096
#define AG_PKG_MAX_PACKAGE (256LL << 20)
#define AG_PKG_MAX_UNPACKED (512LL << 20)

/* Extracts the tar archive (plain or gzip) read from `fd` (its current
 * position; borrowed) into the directory `dirfd` (borrowed; best empty and
 * nobody else's), or from the n bytes at buf (ag_pkg_extract_mem). Every
 * entry must be a regular file or a directory (no symbolic or hard link,
 * device, FIFO), named by a relative path that nb_relpath_problem accepts
 * once a leading "./" and a directory's trailing '/' are taken off (so no
 * absolute path, no ".." or empty component); a file named twice is
 * refused. Files get mode 0755 when the archive gives any execute bit,
 * else 0644; directories 0755; no owner, time or special bit is kept.
 * Missing parent directories are made. At most max_unpacked bytes of
 * files (0: AG_PKG_MAX_UNPACKED) and AG_PKG_MAX_ENTRIES entries.
 *
 * Returns 0; NIMBUS_EPROTO (damaged or unsafe: err names the entry and
 * why), NIMBUS_ETOOBIG (over a bound), NIMBUS_EIO (a file could not be
 * written: err says which), NIMBUS_ENOMEM. What was written before a
 * failure stays in dirfd: the caller removes the directory. */
int ag_pkg_extract(int fd, int dirfd, int64_t max_unpacked, char *err,
                   size_t errcap);
int ag_pkg_extract_mem(const void *buf, size_t n, int dirfd,
                       int64_t max_unpacked, char *err, size_t errcap);

/* Checks what the cloud said about a package before anything is fetched:
 * platform and version well-formed, blob and sha256 64 lowercase hex and
 * equal (else NIMBUS_CHECK_SHA256), size from 0 to max_package (else
 * NIMBUS_CHECK_SIZE), the signature 128 hex digits and pub's Ed25519
 * signature of nimbus-agent\n<platform>\n<version>\n<size>\n<sha256>
 * (else NIMBUS_CHECK_SIGNATURE). Returns NIMBUS_CHECK_NONE when all
 * hold, else the check that failed, with a sentence in err. */
int ag_pkg_check(const nimbus_agent_pkg *p, const uint8_t pub[32],
                 int64_t max_package, char *err, size_t errcap);

/* What to do with version `offered` when `running` runs: AG_VER_NEWER
 * (install), AG_VER_SAME (the same precedence: nothing to do unless it is
 * not installed), AG_VER_OLDER (below: a downgrade), AG_VER_BAD (offered
 * is not a semantic version). nb_semver's order (1.10.0 after 1.9.3,
 * build metadata ignored); a running version that is not a semantic
 * version counts as older than everything. */
enum { AG_VER_BAD = -2, AG_VER_OLDER = -1, AG_VER_SAME = 0, AG_VER_NEWER = 1 };
int ag_pkg_version_cmp(const char *running, const char *offered);

/* Reads a public key file (nb_sign_pub_read) or, with path NULL, the
 * compiled-in key (NB_AGENT_PUBKEY, 64 hex digits; NIMBUS_ENOTFOUND when
 * the build has none). Returns 0, NIMBUS_EIO, NIMBUS_EPROTO, with a
 * sentence in err. */
int ag_pkg_key(const char *path, uint8_t pub[32], char *err, size_t errcap);

#endif
