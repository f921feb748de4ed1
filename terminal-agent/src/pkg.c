/* The pure parts of loading the agent (ag_load.h): the safe extractor of
 * a package archive, the checks of a package's description, the version
 * decision. */
#include "ag_load.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_semver.h"
#include "nb_sign.h"
#include "nb_util.h"

/* ---- Extraction ---------------------------------------------------------- */

/* Opens (making it when missing) each directory of `path` but the last
 * component below dirfd, never through a link. Returns the parent's fd
 * (dirfd itself dup'ed when path has one component) and *base, or -1 with
 * a sentence and *rc (NIMBUS_EPROTO: a file where a directory must be). */
static int ex_parent(int dirfd, const char *path, const char **base, int *rc,
                     char *err, size_t errcap) {
  *rc = NIMBUS_EIO;
  int cur = dup(dirfd);
  const char *p = path;
  for (;;) {
    const char *slash = strchr(p, '/');
    if (cur < 0 || slash == NULL)
      break;
    char comp[NB_COMPONENT_MAX + 1];
    size_t n = (size_t)(slash - p);
    memcpy(comp, p, n); /* nb_relpath_problem bounded it */
    comp[n] = '\0';
    if (mkdirat(cur, comp, 0755) != 0 && errno != EEXIST) {
      nb_errf(err, errcap, "cannot make directory %.*s: %s",
              (int)(slash - path), path, strerror(errno));
      close(cur);
      return -1;
    }
    int next =
        openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      nb_errf(err, errcap, "the archive holds %.*s as a file and a directory",
              (int)(slash - path), path);
      *rc = NIMBUS_EPROTO;
    }
    close(cur);
    cur = next;
    p = slash + 1;
  }
  if (cur < 0)
    return -1;
  *base = p;
  return cur;
}

/* Writes the current entry's data into `base` below `parent`. */
static int ex_file(struct archive *ar, int parent, const char *base,
                   const char *name, mode_t mode, int64_t *total,
                   int64_t max_unpacked, char *err, size_t errcap) {
  int fd = openat(parent, base,
                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) {
      nb_errf(err, errcap, "the archive holds %s twice", name);
      return NIMBUS_EPROTO;
    }
    nb_errf(err, errcap, "cannot create %s: %s", name, strerror(errno));
    return NIMBUS_EIO;
  }
  int rc = 0;
  char buf[65536];
  for (;;) {
    la_ssize_t n = archive_read_data(ar, buf, sizeof buf);
    if (n == 0)
      break;
    if (n < 0) {
      nb_errf(err, errcap, "the archive is damaged at %s: %s", name,
              archive_error_string(ar) != NULL ? archive_error_string(ar)
                                               : "unreadable");
      rc = NIMBUS_EPROTO;
      break;
    }
    if ((*total += n) > max_unpacked) {
      nb_errf(err, errcap,
              "the archive unpacks to more than %lld bytes (at %s)",
              (long long)max_unpacked, name);
      rc = NIMBUS_ETOOBIG;
      break;
    }
    if (nb_write_all(fd, buf, (size_t)n) != 0) {
      nb_errf(err, errcap, "cannot write %s: %s", name, strerror(errno));
      rc = NIMBUS_EIO;
      break;
    }
  }
  /* The mode as asked, whatever the umask. */
  if (rc == 0 && fchmod(fd, mode) != 0) {
    nb_errf(err, errcap, "cannot set the mode of %s: %s", name,
            strerror(errno));
    rc = NIMBUS_EIO;
  }
  if (close(fd) != 0 && rc == 0) {
    nb_errf(err, errcap, "cannot write %s: %s", name, strerror(errno));
    rc = NIMBUS_EIO;
  }
  return rc;
}

/* One entry: checked, then made. */
static int ex_entry(struct archive *ar, struct archive_entry *e, int dirfd,
                    int64_t *total, int64_t max_unpacked, char *err,
                    size_t errcap) {
  const char *raw = archive_entry_pathname(e);
  if (raw == NULL || raw[0] == '\0') {
    nb_errf(err, errcap, "the archive holds an entry without a name");
    return NIMBUS_EPROTO;
  }
  char shown[128];
  snprintf(shown, sizeof shown, "%s", raw);
  for (char *c = shown; *c != '\0'; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f)
      *c = '?';
  if (archive_entry_hardlink(e) != NULL || archive_entry_symlink(e) != NULL ||
      archive_entry_filetype(e) == AE_IFLNK) {
    nb_errf(err, errcap, "%s is a link, which a package may not hold", shown);
    return NIMBUS_EPROTO;
  }
  mode_t type = archive_entry_filetype(e);
  if (type != AE_IFREG && type != AE_IFDIR) {
    nb_errf(err, errcap,
            "%s is not a regular file or a directory, which a package may "
            "not hold",
            shown);
    return NIMBUS_EPROTO;
  }
  if (raw[0] == '/') {
    nb_errf(err, errcap, "%s is an absolute path", shown);
    return NIMBUS_EPROTO;
  }
  const char *name = raw;
  while (name[0] == '.' && name[1] == '/')
    name += 2;
  size_t n = strlen(name);
  if (type == AE_IFDIR && n > 0 && name[n - 1] == '/')
    n--;
  if (type == AE_IFDIR && (n == 0 || (n == 1 && name[0] == '.')))
    return 0; /* "./" itself: the target */
  char path[NB_RELPATH_MAX + 1];
  const char *why = n > NB_RELPATH_MAX ? "is too long" : NULL;
  if (why == NULL) {
    memcpy(path, name, n);
    path[n] = '\0';
    why = nb_relpath_problem(path, n);
  }
  if (why != NULL) {
    nb_errf(err, errcap, "the entry %s %s", shown, why);
    return NIMBUS_EPROTO;
  }
  const char *base = NULL;
  int rc = 0;
  int parent = ex_parent(dirfd, path, &base, &rc, err, errcap);
  if (parent < 0)
    return rc;
  rc = 0;
  if (type == AE_IFDIR) {
    struct stat st;
    if (mkdirat(parent, base, 0755) != 0) {
      int e = errno;
      if (e != EEXIST) {
        nb_errf(err, errcap, "cannot make directory %s: %s", shown,
                strerror(e));
        rc = NIMBUS_EIO;
      } else if (fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                 !S_ISDIR(st.st_mode)) {
        nb_errf(err, errcap, "the archive holds %s as a file and a directory",
                shown);
        rc = NIMBUS_EPROTO;
      }
    }
  } else {
    mode_t mode = (archive_entry_perm(e) & 0111) != 0 ? 0755 : 0644;
    rc = ex_file(ar, parent, base, shown, mode, total, max_unpacked, err,
                 errcap);
  }
  close(parent);
  return rc;
}

static int ex_run(struct archive *ar, int dirfd, int64_t max_unpacked,
                  char *err, size_t errcap) {
  if (max_unpacked <= 0)
    max_unpacked = AG_PKG_MAX_UNPACKED;
  int64_t total = 0;
  int rc = 0, entries = 0;
  for (;;) {
    struct archive_entry *e = NULL;
    int r = archive_read_next_header(ar, &e);
    if (r == ARCHIVE_EOF)
      break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      nb_errf(err, errcap, "the archive is damaged: %s",
              archive_error_string(ar) != NULL ? archive_error_string(ar)
                                               : "unreadable");
      rc = NIMBUS_EPROTO;
      break;
    }
    if (++entries > AG_PKG_MAX_ENTRIES) {
      nb_errf(err, errcap, "the archive holds more than %d entries",
              AG_PKG_MAX_ENTRIES);
      rc = NIMBUS_ETOOBIG;
      break;
    }
    if ((rc = ex_entry(ar, e, dirfd, &total, max_unpacked, err, errcap)) != 0)
      break;
  }
  archive_read_free(ar);
  return rc;
}

/* A reader of tar archives, plain or gzip'ed, and nothing else. */
static struct archive *ex_reader(char *err, size_t errcap) {
  struct archive *ar = archive_read_new();
  if (ar == NULL) {
    nb_errf(err, errcap, "out of memory");
    return NULL;
  }
  if (archive_read_support_format_tar(ar) != ARCHIVE_OK ||
      archive_read_support_filter_gzip(ar) != ARCHIVE_OK ||
      archive_read_support_filter_none(ar) != ARCHIVE_OK) {
    nb_errf(err, errcap, "libarchive cannot read tar.gz: %s",
            archive_error_string(ar) != NULL ? archive_error_string(ar) : "?");
    archive_read_free(ar);
    return NULL;
  }
  return ar;
}

/* The reader `ar`, opened (r: what the open answered), run. */
static int ex_opened(struct archive *ar, int r, int dirfd, int64_t max_unpacked,
                     char *err, size_t errcap) {
  if (r != ARCHIVE_OK) {
    nb_errf(err, errcap, "not an archive: %s",
            archive_error_string(ar) != NULL ? archive_error_string(ar)
                                             : "unreadable");
    archive_read_free(ar);
    return NIMBUS_EPROTO;
  }
  return ex_run(ar, dirfd, max_unpacked, err, errcap);
}

int ag_pkg_extract(int fd, int dirfd, int64_t max_unpacked, char *err,
                   size_t errcap) {
  struct archive *ar = ex_reader(err, errcap);
  return ar == NULL ? NIMBUS_ENOMEM
                    : ex_opened(ar, archive_read_open_fd(ar, fd, 65536), dirfd,
                                max_unpacked, err, errcap);
}

int ag_pkg_extract_mem(const void *buf, size_t n, int dirfd,
                       int64_t max_unpacked, char *err, size_t errcap) {
  struct archive *ar = ex_reader(err, errcap);
  return ar == NULL ? NIMBUS_ENOMEM
                    : ex_opened(ar, archive_read_open_memory(ar, buf, n), dirfd,
                                max_unpacked, err, errcap);
}

/* ---- The description's checks ------------------------------------------- */

static bool hex_lower(const char *s, size_t want) {
  return strlen(s) == want && nb_is_lower_hex(s, want);
}

int ag_pkg_check(const nimbus_agent_pkg *p, const uint8_t pub[32],
                 int64_t max_package, char *err, size_t errcap) {
  if (max_package <= 0)
    max_package = AG_PKG_MAX_PACKAGE;
  if (!nb_valid_terminal(p->platform, strlen(p->platform)) ||
      !nb_semver_valid(p->version, strlen(p->version))) {
    nb_errf(err, errcap,
            "the package's platform or version is malformed, which no "
            "signature covers");
    return NIMBUS_CHECK_SIGNATURE;
  }
  if (!hex_lower(p->sha256, 64) || strcmp(p->blob, p->sha256) != 0) {
    nb_errf(err, errcap,
            "sha256 check failed: the package's blob %.64s is not its "
            "SHA-256 %.64s",
            p->blob, p->sha256);
    return NIMBUS_CHECK_SHA256;
  }
  if (p->size < 0 || p->size > max_package) {
    nb_errf(err, errcap,
            "size check failed: the package is %lld bytes, more than the "
            "%lld this agent takes",
            (long long)p->size, (long long)max_package);
    return NIMBUS_CHECK_SIZE;
  }
  uint8_t sig[NB_SIGN_SIG];
  bool ok = hex_lower(p->signature, 2 * NB_SIGN_SIG) &&
            nb_unhex32(p->signature, sig) == 0 &&
            nb_unhex32(p->signature + 64, sig + 32) == 0;
  char stmt[256];
  size_t n =
      ok ? nb_sign_statement(stmt, sizeof stmt, "nimbus-agent", p->platform,
                             p->version, (uint64_t)p->size, p->sha256)
         : 0;
  if (n == 0 || nb_sign_verify(stmt, n, sig, pub) != 0) {
    char key[65];
    nb_hex(pub, 32, key);
    nb_errf(err, errcap,
            "signature check failed: the signature of %s %s is not that of "
            "the key %.16s... over its platform, version, size and SHA-256",
            p->platform, p->version, key);
    return NIMBUS_CHECK_SIGNATURE;
  }
  return NIMBUS_CHECK_NONE;
}

/* ---- Versions and keys --------------------------------------------------- */

int ag_pkg_version_cmp(const char *running, const char *offered) {
  if (offered == NULL || !nb_semver_valid(offered, strlen(offered)))
    return AG_VER_BAD;
  int c = nb_semver_cmp(offered, running != NULL ? running : "");
  return c > 0 ? AG_VER_NEWER : c < 0 ? AG_VER_OLDER : AG_VER_SAME;
}

int ag_pkg_key(const char *path, uint8_t pub[32], char *err, size_t errcap) {
  if (path != NULL)
    return nb_sign_pub_read(path, pub, err, errcap);
#ifdef NB_AGENT_PUBKEY
  static const char key[] = NB_AGENT_PUBKEY;
  if (sizeof key - 1 == 64 && nb_unhex32(key, pub) == 0)
    return 0;
#endif
  nb_errf(err, errcap,
          "no public key to check packages against: this build has none "
          "compiled in");
  return NIMBUS_ENOTFOUND;
}
