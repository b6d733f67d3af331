/* Minimal TAP producer for the engine tests (meson test protocol: 'tap').
 *
 *   TAP_CHECK(cond, "what %d", x)   one test point, with a diagnostic when it fails
 *   TAP_NEAR(a, b, tol, "what")     |a - b| <= tol
 *   return tap_done();              prints the plan, returns the exit status
 */
#ifndef SDE_TEST_TAP_H
#define SDE_TEST_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static int tap_count_ = 0;
static int tap_failed_ = 0;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline int tap_check_(int ok, const char *fmt, ...) {
  va_list ap;
  tap_count_++;
  if (!ok) tap_failed_++;
  printf("%s %d - ", ok ? "ok" : "not ok", tap_count_);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
  return ok;
}

#define TAP_CHECK(cond, ...) tap_check_(!!(cond), __VA_ARGS__)
#define TAP_NEAR(a, b, tol, what)                                                         \
  tap_check_(fabs((double)(a) - (double)(b)) <= (tol), "%s: %.9g vs %.9g (tol %.3g)", what, \
             (double)(a), (double)(b), (double)(tol))
#define TAP_DIAG(...) (printf("# "), printf(__VA_ARGS__), printf("\n"), fflush(stdout))

static inline int tap_done(void) {
  printf("1..%d\n", tap_count_);
  if (tap_failed_) printf("# %d of %d failed\n", tap_failed_, tap_count_);
  return tap_failed_ ? 1 : 0;
}

#endif
