/* The device id: chosen once per installation and kept in
 * <state_dir>/device-id, so that the MQTT client id "<terminal>.<device>"
 * stays the same across runs and the broker keeps the persistent session
 * (PROTOCOL.md, Transport and identity).
 *
 * Two processes starting at once for the first time must agree on one id,
 * and a crash must never leave a half-written file: the id is written to a
 * temporary file (mkstemp: mode 0600), synced, and then hard-linked to its
 * name, which fails with EEXIST if another process got there first; the
 * loser then reads the winner's id. */
#include "ag_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nb_util.h"

/* mkdir -p with mode 0700 for the directories it makes. */
static int ag_dir_make(const char *dir, char *err, size_t errcap) {
  char path[4096];
  size_t n = nb_strlcpy(path, dir, sizeof path);
  if (n == 0 || n >= sizeof path) {
    snprintf(err, errcap, "state directory path is empty or too long");
    return NIMBUS_EIO;
  }
  for (size_t i = 1; i <= n; i++) {
    if (path[i] != '/' && path[i] != '\0')
      continue;
    char saved = path[i];
    path[i] = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
      snprintf(err, errcap, "cannot create state directory %s: %s", path,
               strerror(errno));
      return NIMBUS_EIO;
    }
    path[i] = saved;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(err, errcap, "state directory %s is not a directory", dir);
    return NIMBUS_EIO;
  }
  return 0;
}

#define AG_NO_FILE (-1)

/* Reads the id in `path`. Returns 0, AG_NO_FILE when there is no file yet,
 * or NIMBUS_EIO. */
static int ag_device_id_read(const char *path, char *out, size_t cap, char *err,
                             size_t errcap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return AG_NO_FILE;
    snprintf(err, errcap, "cannot open %s: %s", path, strerror(errno));
    return NIMBUS_EIO;
  }
  char buf[SC_ID_MAX + 4];
  size_t n = 0;
  while (n < sizeof buf) {
    ssize_t r = read(fd, buf + n, sizeof buf - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      snprintf(err, errcap, "cannot read %s: %s", path, strerror(errno));
      close(fd);
      return NIMBUS_EIO;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                   buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    n--;
  if (!nb_valid_token(buf, n, 8, 64) || n + 1 > cap) {
    snprintf(err, errcap,
             "%s does not hold a device id (8-64 of [A-Za-z0-9_-]); "
             "remove it to make a new one",
             path);
    return NIMBUS_EIO;
  }
  memcpy(out, buf, n);
  out[n] = '\0';
  return 0;
}

int ag_device_id_load(const char *dir, char *out, size_t cap, char *err,
                      size_t errcap) {
  char path[4200], tmp[4220];
  int fd = -1, rc;
  bool tmp_made = false;

  if ((rc = ag_dir_make(dir, err, errcap)) != 0)
    return rc;
  if ((size_t)snprintf(path, sizeof path, "%s/device-id", dir) >= sizeof path ||
      (size_t)snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= sizeof tmp) {
    snprintf(err, errcap, "state directory path is too long");
    return NIMBUS_EIO;
  }
  rc = ag_device_id_read(path, out, cap, err, errcap);
  if (rc != AG_NO_FILE)
    return rc;

  char id[SC_ID_MAX + 2];
  if (nb_random_id(id, sizeof id, AG_DEVICE_ID_BITS) != 0) {
    snprintf(err, errcap, "no random bytes for a device id");
    return NIMBUS_ESYS;
  }
  size_t idn = strlen(id);
  if (idn + 1 > cap) {
    snprintf(err, errcap, "device id buffer too small");
    return NIMBUS_EIO;
  }
  id[idn] = '\n';
  fd = mkstemp(tmp);
  if (fd < 0) {
    snprintf(err, errcap, "cannot create a file in %s: %s", dir,
             strerror(errno));
    return NIMBUS_EIO;
  }
  tmp_made = true;
  if (nb_write_all(fd, id, idn + 1) != 0 || fsync(fd) != 0) {
    snprintf(err, errcap, "cannot write %s: %s", tmp, strerror(errno));
    rc = NIMBUS_EIO;
    goto fail;
  }
  close(fd);
  fd = -1;
  if (link(tmp, path) != 0) {
    if (errno != EEXIST) {
      snprintf(err, errcap, "cannot create %s: %s", path, strerror(errno));
      rc = NIMBUS_EIO;
      goto fail;
    }
    /* Another process made it first: use its id. */
    unlink(tmp);
    return ag_device_id_read(path, out, cap, err, errcap) == 0 ? 0 : NIMBUS_EIO;
  }
  unlink(tmp);
  /* Make the new name durable, so the id survives a power cut. */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  memcpy(out, id, idn);
  out[idn] = '\0';
  return 0;

fail:
  if (fd >= 0)
    close(fd);
  if (tmp_made)
    unlink(tmp);
  return rc;
}

/* The session slots: one process's agent holds slot 0, whose client id is
 * the installation's own; agents running at the same time take slots 1,
 * 2, ... instead of taking the session over from each other. */
int ag_session_slot_take(const char *dir, int slots, int *slot, int *fd,
                         char *err, size_t errcap) {
  char path[4200];
  for (int k = 0; k < slots; k++) {
    if ((size_t)snprintf(path, sizeof path, "%s/session.%d.lock", dir, k) >=
        sizeof path) {
      snprintf(err, errcap, "state directory path is too long");
      return NIMBUS_EIO;
    }
    int lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0) {
      snprintf(err, errcap, "cannot open %s: %s", path, strerror(errno));
      return NIMBUS_EIO;
    }
    int r;
    while ((r = flock(lfd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR)
      ;
    if (r == 0) {
      *slot = k;
      *fd = lfd;
      return 0;
    }
    int e = errno;
    close(lfd);
    if (e != EWOULDBLOCK) {
      snprintf(err, errcap, "cannot lock %s: %s", path, strerror(e));
      return NIMBUS_EIO;
    }
  }
  snprintf(err, errcap,
           "%d agents of this installation (state directory %s) are "
           "running already; wait for one to end",
           slots, dir);
  return NIMBUS_EINUSE;
}
