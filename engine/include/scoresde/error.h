/* Status codes and the per-thread error message of libscoresde.
 *
 * Every fallible engine function returns an sde_status (0 = success). On failure it
 * also leaves a human-readable message, retrievable with sde_errmsg() on the same
 * thread. The engine never prints and never calls exit(). */
#ifndef SCORESDE_ERROR_H
#define SCORESDE_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  SDE_OK = 0,
  SDE_EINVAL = -1,     /* bad argument or shape */
  SDE_ENOMEM = -2,     /* out of host or device memory */
  SDE_EIO = -3,        /* file missing or unreadable */
  SDE_EFORMAT = -4,    /* malformed file contents */
  SDE_EUNSUPPORTED = -5, /* valid request this build or model cannot do */
  SDE_ECANCELLED = -6, /* a progress callback asked to stop */
  SDE_ENODEV = -7,     /* requested device (GPU) not present */
  SDE_ENUMERIC = -8,   /* solver failure: step size underflow, NaN */
} sde_status;

/* Message of the last failure on this thread ("" if none). */
const char *sde_errmsg(void);

/* Sets the message (printf-style) and returns `code`, so callers can write
 * `return sde_fail(SDE_EINVAL, "x must be ...");`. */
int sde_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prefixes the current message with context: "context: old message". Returns code. */
int sde_fail_context(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

const char *sde_status_name(int code);

/* Allocation helpers that set SDE_ENOMEM's message. They return NULL on failure; free() frees
 * them. sde_malloc puts blocks of 4096 bytes or more on a 64-byte boundary. */
void *sde_malloc(size_t bytes);
void *sde_calloc(size_t count, size_t size);

#ifdef __cplusplus
}
#endif
#endif
