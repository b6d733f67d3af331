/* Per-thread error messages: the engine reports, callers decide what to show. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scoresde/error.h"

#define SDE_ERRMSG_MAX 1024

static _Thread_local char errmsg[SDE_ERRMSG_MAX];

const char *sde_errmsg(void) { return errmsg; }

int sde_fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errmsg, sizeof errmsg, fmt, ap);
  va_end(ap);
  return code;
}

int sde_fail_context(int code, const char *fmt, ...) {
  char old[SDE_ERRMSG_MAX];
  va_list ap;
  memcpy(old, errmsg, sizeof old);
  va_start(ap, fmt);
  int len = vsnprintf(errmsg, sizeof errmsg, fmt, ap);
  va_end(ap);
  if (len < 0) len = 0;
  size_t used = (size_t)len < sizeof errmsg - 1 ? (size_t)len : sizeof errmsg - 1;
  /* append ": old", truncated to the buffer */
  if (used + 2 < sizeof errmsg) {
    memcpy(errmsg + used, ": ", 2);
    size_t room = sizeof errmsg - used - 3;
    size_t olen = strnlen(old, room);
    memcpy(errmsg + used + 2, old, olen);
    errmsg[used + 2 + olen] = '\0';
  }
  return code;
}

const char *sde_status_name(int code) {
  switch (code) {
    case SDE_OK: return "ok";
    case SDE_EINVAL: return "invalid argument";
    case SDE_ENOMEM: return "out of memory";
    case SDE_EIO: return "i/o error";
    case SDE_EFORMAT: return "bad file format";
    case SDE_EUNSUPPORTED: return "unsupported";
    case SDE_ECANCELLED: return "cancelled";
    case SDE_ENODEV: return "no such device";
    case SDE_ENUMERIC: return "numerical failure";
    default: return "unknown error";
  }
}

/* Blocks of a page or more on a 64-byte boundary: malloc puts large blocks 16 bytes into a
 * page, so every other 32-byte vector load of a tensor spans two cache lines (measured:
 * the Winograd weight gradient 1.18x the time); the buffers of tensors, workspaces and
 * scratch all come from here. Freed with free(), as any malloc'd block. */
void *sde_malloc(size_t bytes) {
  void *p = bytes < 4096          ? malloc(bytes ? bytes : 1)
            : bytes > SIZE_MAX - 63 ? NULL /* the rounding would wrap */
                                    : aligned_alloc(64, (bytes + 63) & ~(size_t)63);
  if (!p) sde_fail(SDE_ENOMEM, "out of memory allocating %zu bytes", bytes);
  return p;
}

void *sde_calloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) sde_fail(SDE_ENOMEM, "out of memory allocating %zu x %zu bytes", count, size);
  return p;
}
