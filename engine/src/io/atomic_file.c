/* Files that are either the old version or the complete new one, whatever happens to the
 * writer: written to PATH.tmp.<pid> beside PATH, flushed to disk, renamed over PATH, and
 * the rename itself flushed with the folder. A writer killed before the rename leaves its
 * temporary behind; the next writer of PATH (or a resumed training run) removes those of
 * dead writers, found by their pid. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scoresde/error.h"
#include "scoresde/io.h"

/* PATH split at its last '/': the folder ("." when none) and the file name. */
typedef struct {
  char dir[4096];
  const char *base;
} split_path;

static int split(const char *path, split_path *sp) {
  const char *slash = strrchr(path, '/');
  size_t n = slash ? (size_t)(slash - path) : 0;
  if (n >= sizeof sp->dir) return sde_fail(SDE_EINVAL, "%s: path too long", path);
  if (!slash) snprintf(sp->dir, sizeof sp->dir, ".");
  else if (n == 0) snprintf(sp->dir, sizeof sp->dir, "/");
  else snprintf(sp->dir, sizeof sp->dir, "%.*s", (int)n, path);
  sp->base = slash ? slash + 1 : path;
  return SDE_OK;
}

/* The pid of a temporary "<base>.tmp.<digits>" of base, or 0 when name is not one. */
static long temp_pid(const char *name, const char *base) {
  size_t b = strlen(base);
  if (strncmp(name, base, b) != 0 || strncmp(name + b, ".tmp.", 5) != 0) return 0;
  const char *digits = name + b + 5;
  if (!*digits || strlen(digits) > 9) return 0;
  for (const char *d = digits; *d; d++)
    if (*d < '0' || *d > '9') return 0;
  return atol(digits);
}

/* kill(pid, 0) fails with ESRCH only when no such process exists. */
static int process_alive(long pid) { return kill((pid_t)pid, 0) == 0 || errno != ESRCH; }

int sde_remove_stale_temporaries(const char *path, int *removed) {
  split_path sp;
  int count = 0, rc = path ? split(path, &sp) : sde_fail(SDE_EINVAL, "no path");
  if (removed) *removed = 0;
  if (rc) return rc;
  DIR *d = opendir(sp.dir);
  if (!d) return errno == ENOENT ? SDE_OK : sde_fail(SDE_EIO, "%s: %s", sp.dir, strerror(errno));
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    long pid = temp_pid(e->d_name, sp.base);
    if (pid <= 0 || pid == (long)getpid() || process_alive(pid)) continue;
    char full[8192];
    snprintf(full, sizeof full, "%s/%s", sp.dir, e->d_name);
    if (unlink(full) == 0) count++;
    else rc = sde_fail(SDE_EIO, "cannot remove the stale temporary %s: %s", full, strerror(errno));
  }
  closedir(d);
  if (removed) *removed = count;
  return rc;
}

static int write_all(int fd, const unsigned char *p, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Flushes a rename: the folder's entry must reach the disk too. File systems that cannot
 * sync a folder (EINVAL) have nothing to flush. */
static int sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno == EACCES ? 0 : -1;
  int rc = fsync(fd) != 0 && errno != EINVAL && errno != EROFS ? -1 : 0;
  close(fd);
  return rc;
}

int sde_write_file_atomic(const char *path, const void *data, size_t len) {
  split_path sp;
  int rc = path ? split(path, &sp) : sde_fail(SDE_EINVAL, "no path");
  if (rc) return rc;
  sde_remove_stale_temporaries(path, NULL); /* best effort: a leftover is no reason to fail */
  char tmp[8192];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return sde_fail(SDE_EIO, "cannot create '%s': %s", tmp, strerror(errno));
  const char *failed = NULL; /* the step that failed, with its errno */
  int err = 0;
  if (write_all(fd, data, len)) failed = "write", err = errno;
  else if (fsync(fd) != 0) failed = "flush", err = errno;
  if (close(fd) != 0 && !failed) failed = "close", err = errno;
  if (!failed && rename(tmp, path) != 0) failed = "rename", err = errno;
  if (failed) {
    unlink(tmp);
    return sde_fail(SDE_EIO, "cannot %s '%s': %s", failed, tmp, strerror(err));
  }
  if (sync_dir(sp.dir) != 0)
    return sde_fail(SDE_EIO, "wrote '%s' but cannot flush its folder: %s", path, strerror(errno));
  return SDE_OK;
}
