/* Item names and kinds, the safe directory walk of restore, streaming
 * SHA-256, copies, times and the progress line (bk.h). */
#include "bk.h"
#include "sc.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nb_util.h"

volatile sig_atomic_t bk_interrupted = 0;

static void bk_on_signal(int sig) { bk_interrupted = sig; }

void bk_catch_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = bk_on_signal;
  sigemptyset(&sa.sa_mask);
  /* The first signal asks; a second one (default action) ends it now. */
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
}

void bk_sleep_ms(int64_t ms) {
  int64_t end = nb_mono_ms() + ms;
  for (int64_t left = ms; left > 0 && !bk_interrupted;
       left = end - nb_mono_ms()) {
    int64_t slice = left < 100 ? left : 100;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000};
    nanosleep(&ts, NULL);
  }
}

bool bk_stopped(void *ctx) {
  (void)ctx;
  return bk_interrupted != 0;
}

/* ---- Names ------------------------------------------------------------- */

static bool bk_ends_with(const char *s, size_t n, const char *suffix) {
  size_t k = strlen(suffix);
  return n >= k && strncasecmp(s + n - k, suffix, k) == 0;
}

bool bk_is_part_name(const char *name) {
  const char *base = strrchr(name, '/');
  base = base != NULL ? base + 1 : name;
  return strlen(base) == 8 + 24 + 5 && strncmp(base, ".nimbus-", 8) == 0 &&
         nb_is_lower_hex(base + 8, 24) && strcmp(base + 32, ".part") == 0;
}

const char *bk_kind_of(const char *name) {
  static const char *const photo[] = {"jpg",  "jpeg", "png",  "gif",
                                      "heic", "heif", "webp", "bmp",
                                      "tif",  "tiff", "dng"};
  static const char *const video[] = {"mp4", "mov",  "m4v", "3gp",
                                      "mkv", "webm", "avi"};
  const char *base = strrchr(name, '/');
  base = base != NULL ? base + 1 : name;
  size_t n = strlen(base);
  if (bk_ends_with(base, n, ".vcf") && n > 4)
    return "contact";
  if (bk_ends_with(base, n, ".sms.jsonl") && n > 10)
    return "sms";
  const char *dot = strrchr(base, '.');
  if (dot == NULL || dot == base || dot[1] == '\0')
    return "file";
  for (size_t i = 0; i < sizeof photo / sizeof photo[0]; i++)
    if (strcasecmp(dot + 1, photo[i]) == 0)
      return "photo";
  for (size_t i = 0; i < sizeof video / sizeof video[0]; i++)
    if (strcasecmp(dot + 1, video[i]) == 0)
      return "video";
  return "file";
}

bool bk_kind_valid(const char *s, size_t n) {
  static const char *const kinds[] = SC_ITEM_KINDS;
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (strlen(kinds[i]) == n && memcmp(kinds[i], s, n) == 0)
      return true;
  return false;
}

bool bk_hex_valid(const char *s, size_t n) {
  return n == 64 && nb_is_lower_hex(s, n);
}

/* ---- Files ------------------------------------------------------------- */

int bk_hash_fd(int fd, uint8_t *buf, size_t cap, uint8_t out[32], int64_t *n,
               bk_tick_fn tick, void *ctx) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(md);
    errno = ENOMEM;
    return -1;
  }
  int64_t total = 0;
  for (;;) {
    if (bk_interrupted) {
      EVP_MD_CTX_free(md);
      errno = EINTR;
      return -1;
    }
    ssize_t r = read(fd, buf, cap);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      EVP_MD_CTX_free(md);
      errno = e;
      return -1;
    }
    if (r == 0)
      break;
    EVP_DigestUpdate(md, buf, (size_t)r);
    total += r;
    if (tick != NULL)
      tick(ctx, (size_t)r);
  }
  unsigned len = 0;
  EVP_DigestFinal_ex(md, out, &len);
  EVP_MD_CTX_free(md);
  *n = total;
  return 0;
}

int bk_open_parent(int rootfd, const char *name, bool create, const char **base,
                   char *err, size_t errcap) {
  const char *last = strrchr(name, '/');
  int fd = dup(rootfd);
  if (fd < 0) {
    nb_errf(err, errcap, "cannot use the target directory: %s",
            strerror(errno));
    return -1;
  }
  *base = last != NULL ? last + 1 : name;
  const char *p = name;
  char comp[NB_RELPATH_MAX + 1];
  while (last != NULL && p <= last) {
    const char *slash = strchr(p, '/');
    size_t len = (size_t)(slash - p);
    memcpy(comp, p, len);
    comp[len] = '\0';
    int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int next = openat(fd, comp, flags);
    if (next < 0 && errno == ENOENT && create) {
      if (mkdirat(fd, comp, 0777) != 0 && errno != EEXIST) {
        int e = errno;
        nb_errf(err, errcap, "cannot create directory %.*s: %s",
                (int)(slash - name), name, strerror(e));
        close(fd);
        errno = e;
        return -1;
      }
      next = openat(fd, comp, flags);
    }
    if (next < 0) {
      int e = errno;
      if (e == ELOOP || e == ENOTDIR)
        nb_errf(err, errcap,
                "%.*s is not a directory (a symbolic link or a file is "
                "never followed)",
                (int)(slash - name), name);
      else
        nb_errf(err, errcap, "cannot open directory %.*s: %s",
                (int)(slash - name), name, strerror(e));
      close(fd);
      errno = e;
      return -1;
    }
    close(fd);
    fd = next;
    p = slash + 1;
  }
  return fd;
}

int bk_copy_fd(int in, int out, int64_t n) {
  int64_t done = 0;
  bool kernel = true;
  uint8_t *buf = NULL;
  while (done < n) {
    size_t want = (size_t)(n - done > (1 << 30) ? (1 << 30) : n - done);
    ssize_t r;
    if (kernel) {
      loff_t ioff = done, ooff = done;
      r = copy_file_range(in, &ioff, out, &ooff, want, 0);
      if (r < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
                    errno == EOPNOTSUPP)) {
        kernel = false;
        continue;
      }
    } else {
      if (buf == NULL && (buf = malloc(SC_SEGMENT)) == NULL) {
        errno = ENOMEM;
        return -1;
      }
      r = pread(in, buf, want < SC_SEGMENT ? want : SC_SEGMENT, done);
      if (r > 0 && pwrite(out, buf, (size_t)r, done) != r) {
        int e = errno;
        free(buf);
        errno = e != 0 ? e : EIO;
        return -1;
      }
    }
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      free(buf);
      errno = e;
      return -1;
    }
    if (r == 0) {
      free(buf);
      errno = EIO;
      return -1;
    }
    done += r;
  }
  free(buf);
  return 0;
}

int64_t bk_ms_of_timespec(int64_t sec, int64_t nsec) {
  /* nsec is 0..999999999, so this rounds down also before 1970. */
  return sec * 1000 + nsec / 1000000;
}

void bk_timespec_of_ms(int64_t ms, int64_t *sec, int64_t *nsec) {
  int64_t s = ms / 1000, r = ms % 1000;
  if (r < 0) {
    r += 1000;
    s -= 1;
  }
  *sec = s;
  *nsec = r * 1000000;
}

char *bk_state_dir(const char *opt) {
  if (opt != NULL && opt[0] != '\0')
    return strdup(opt);
  const char *env = getenv("NIMBUS_STATE_DIR");
  if (env != NULL && env[0] != '\0')
    return strdup(env);
  const char *home = getenv("HOME");
  if (home == NULL || home[0] == '\0')
    return NULL;
  size_t n = strlen(home) + sizeof "/.nimbus";
  char *s = malloc(n);
  if (s != NULL)
    snprintf(s, n, "%s/.nimbus", home);
  return s;
}

/* ---- Progress ---------------------------------------------------------- */

void bk_fmt_bytes(int64_t n, char *buf, size_t cap) {
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)n;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof unit / sizeof unit[0]) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, cap, "%lld B", (long long)n);
  else
    snprintf(buf, cap, "%.1f %s", v, unit[u]);
}

void bk_progress_init(bk_progress *p, int mode, FILE *fp) {
  memset(p, 0, sizeof *p);
  p->mode = mode;
  p->fp = fp;
  p->phase = "";
}

void bk_progress_phase(bk_progress *p, const char *phase, int64_t bytes_total,
                       int64_t files_total) {
  bk_progress_clear(p);
  p->phase = phase;
  p->bytes_done = p->files_done = 0;
  p->bytes_total = bytes_total;
  p->files_total = files_total;
  p->start_ms = p->last_ms = p->rate_ms = nb_mono_ms();
  p->shown_ms = 0;
  p->rate_bytes = 0;
  p->rate = 0;
  p->counts = false;
}

static void bk_fmt_secs(double s, char *buf, size_t cap) {
  if (s < 0 || s > 359999) {
    snprintf(buf, cap, "--:--");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

void bk_progress_show(bk_progress *p, bool force) {
  if (p->mode == 0)
    return;
  int64_t now = nb_mono_ms();
  if (!force && now - p->shown_ms < (p->mode == 1 ? 200 : 1000))
    return;
  p->shown_ms = now;
  /* The rate over windows of at least a second, smoothed. */
  if (now - p->rate_ms >= 1000) {
    double r = (double)(p->bytes_done - p->rate_bytes) * 1000.0 /
               (double)(now - p->rate_ms);
    p->rate = p->rate == 0 ? r : 0.5 * p->rate + 0.5 * r;
    p->rate_ms = now;
    p->rate_bytes = p->bytes_done;
  }
  double rate = p->rate;
  if (rate == 0 && now > p->start_ms)
    rate = (double)p->bytes_done * 1000.0 / (double)(now - p->start_ms);
  double eta = rate > 0 ? (double)(p->bytes_total - p->bytes_done) / rate : -1;
  if (p->counts) {
    int pct =
        p->bytes_total > 0 ? (int)(p->bytes_done * 100 / p->bytes_total) : 0;
    pct = pct < 0 ? 0 : pct > 100 ? 100 : pct;
    if (p->mode == 2) {
      fprintf(p->fp, "{\"phase\":\"%s\",\"done\":%lld,\"total\":%lld}\n",
              p->phase, (long long)p->bytes_done, (long long)p->bytes_total);
    } else {
      char bar[24], e[32];
      int width = (int)sizeof bar - 1, fill = pct * width / 100;
      memset(bar, '#', (size_t)fill);
      memset(bar + fill, '.', (size_t)(width - fill));
      bar[width] = '\0';
      bk_fmt_secs(eta, e, sizeof e);
      fprintf(p->fp, "\r\033[K%-9s [%s] %3d%%  ETA %s", p->phase, bar, pct, e);
      p->drawn = true;
    }
    fflush(p->fp);
    return;
  }
  if (p->mode == 2) {
    fprintf(p->fp,
            "{\"phase\":\"%s\",\"bytes_done\":%lld,\"bytes_total\":%lld,"
            "\"files_done\":%lld,\"files_total\":%lld,\"rate\":%.0f}\n",
            p->phase, (long long)p->bytes_done, (long long)p->bytes_total,
            (long long)p->files_done, (long long)p->files_total, rate);
    fflush(p->fp);
    return;
  }
  char done[32], total[32], r[32], e[32], bar[24];
  bk_fmt_bytes(p->bytes_done, done, sizeof done);
  bk_fmt_bytes(p->bytes_total, total, sizeof total);
  bk_fmt_bytes((int64_t)rate, r, sizeof r);
  bk_fmt_secs(eta, e, sizeof e);
  int width = (int)sizeof bar - 1;
  int fill = p->bytes_total > 0
                 ? (int)((double)p->bytes_done * width / (double)p->bytes_total)
                 : width;
  fill = fill < 0 ? 0 : fill > width ? width : fill;
  memset(bar, '#', (size_t)fill);
  memset(bar + fill, '.', (size_t)(width - fill));
  bar[width] = '\0';
  fprintf(p->fp, "\r\033[K%-9s [%s] %s / %s  %s/s  ETA %s  files %lld/%lld",
          p->phase, bar, done, total, r, e, (long long)p->files_done,
          (long long)p->files_total);
  fflush(p->fp);
  p->drawn = true;
}

void bk_progress_clear(bk_progress *p) {
  if (p->mode == 1 && p->drawn) {
    fprintf(p->fp, "\r\033[K");
    fflush(p->fp);
    p->drawn = false;
  }
}

void bk_progress_bytes(void *ctx, int64_t done, int64_t total) {
  bk_progress *p = ctx;
  p->bytes_total = total;
  p->bytes_done = done;
  bk_progress_show(p, false);
}

void bk_progress_finish(bk_progress *p) {
  if (p->mode == 0)
    return;
  bk_progress_show(p, true);
  if (p->mode == 1) {
    fputc('\n', p->fp);
    fflush(p->fp);
    p->drawn = false;
  }
}

void bk_say(bk_progress *p, const char *fmt, ...) {
  bk_progress_clear(p);
  va_list ap;
  va_start(ap, fmt);
  fputs("nimbus-agent: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- msgpack ------------------------------------------------------------ */
