/* Option parsing, progress bar and Ctrl-C handling for the `scoresde` tool. */
#include "cli_util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "scoresde/scoresde.h"

volatile sig_atomic_t cli_interrupted = 0;

static void on_sigint(int sig) {
  (void)sig;
  cli_interrupted = 1;
}

void cli_install_sigint(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = (int)SA_RESETHAND; /* the second Ctrl-C gets the default action */
  sigaction(SIGINT, &sa, NULL);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "scoresde%s%s: ", cmd ? " " : "", cmd ? cmd : "");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'scoresde%s%s --help'.\n", cmd ? " " : "", cmd ? cmd : "");
  return CLI_EXIT_USAGE;
}

/* ---- option parsing ------------------------------------------------------------------ */

static const cli_option *find_option(const cli_option *opts, size_t nopts, unsigned groups,
                                     const char *name, size_t len) {
  for (size_t i = 0; i < nopts; i++) {
    const cli_option *o = &opts[i];
    if (!(o->groups & groups)) continue;
    if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    if (o->alias && strlen(o->alias) == len && strncmp(o->alias, name, len) == 0) return o;
  }
  return NULL;
}

static int in_range(const cli_option *o, double v) {
  if ((o->open & CLI_OPEN_LO) ? !(v > o->lo) : !(v >= o->lo)) return 0;
  return (o->open & CLI_OPEN_HI) ? v < o->hi : v <= o->hi;
}

static void range_text(const cli_option *o, char *buf, size_t size) {
  if (o->type == CLI_DOUBLE) {
    const int lo_open = o->open & CLI_OPEN_LO, hi_open = o->open & CLI_OPEN_HI;
    if (isinf(o->hi))
      snprintf(buf, size, "%s %g", lo_open ? ">" : ">=", o->lo);
    else
      snprintf(buf, size, "in %s%g, %g%s", lo_open ? "(" : "[", o->lo, o->hi, hi_open ? ")" : "]");
  } else {
    snprintf(buf, size, "an integer in [%.0f, %.0f]", o->lo, o->hi);
  }
}

static int set_value(const char *cmd, const cli_option *o, const char *val, void *base) {
  char *dst = (char *)base + o->offset;
  char *end = NULL;
  char range[96];
  switch (o->type) {
    case CLI_FLAG:
      *(int *)(void *)dst = 1;
      return 0;
    case CLI_STR:
      if (!*val) return cli_usage_error(cmd, "--%s needs a non-empty value", o->name);
      *(const char **)(void *)dst = val;
      return 0;
    case CLI_INT:
    case CLI_INT64: {
      errno = 0;
      long long v = strtoll(val, &end, 10);
      range_text(o, range, sizeof range);
      if (end == val || *end || errno == ERANGE || !in_range(o, (double)v))
        return cli_usage_error(cmd, "--%s must be %s, not '%s'", o->name, range, val);
      if (o->type == CLI_INT)
        *(int *)(void *)dst = (int)v;
      else
        *(int64_t *)(void *)dst = (int64_t)v;
      return 0;
    }
    case CLI_U64: {
      const char *s = val;
      while (*s == ' ') s++;
      errno = 0;
      int radix = (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) ? 16 : 10;
      unsigned long long v = (*s == '-' || *s == '+') ? 0 : strtoull(s, &end, radix);
      if (*s == '-' || *s == '+' || end == s || *end || errno == ERANGE)
        return cli_usage_error(cmd, "--%s must be a non-negative integer below 2^64, not '%s'",
                               o->name, val);
      *(uint64_t *)(void *)dst = (uint64_t)v;
      return 0;
    }
    case CLI_DOUBLE: {
      errno = 0;
      double v = strtod(val, &end);
      range_text(o, range, sizeof range);
      if (end == val || *end || errno == ERANGE || !isfinite(v) || !in_range(o, v))
        return cli_usage_error(cmd, "--%s must be a number %s, not '%s'", o->name, range, val);
      *(double *)(void *)dst = v;
      return 0;
    }
  }
  return cli_usage_error(cmd, "internal error: option --%s has no type", o->name);
}

int cli_parse(const char *cmd, int argc, char **args, const cli_option *opts, size_t nopts,
              unsigned groups, void *base, int *help) {
  *help = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = args[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      *help = 1;
      return 0;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      if (a[0] == '-' && a[1] != '\0')
        return cli_usage_error(cmd, "unknown option '%s' (options are spelt --name)", a);
      return cli_usage_error(cmd, "unexpected argument '%s'", a);
    }
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const cli_option *o = find_option(opts, nopts, groups, name, len);
    if (!o) {
      if (find_option(opts, nopts, ~0u, name, len))
        return cli_usage_error(cmd, "option '--%.*s' does not apply to this command", (int)len,
                               name);
      return cli_usage_error(cmd, "unknown option '--%.*s'", (int)len, name);
    }
    const char *val = NULL;
    if (o->type == CLI_FLAG) {
      if (eq) return cli_usage_error(cmd, "option --%s takes no value", o->name);
    } else if (eq) {
      val = eq + 1;
    } else {
      if (i + 1 >= argc) return cli_usage_error(cmd, "option --%s needs a value", o->name);
      val = args[++i];
    }
    int rc = set_value(cmd, o, val, base);
    if (rc) return rc;
  }
  return 0;
}

/* Prints text from column `indent` (already reached), wrapping at 79 columns. */
static void print_wrapped(FILE *f, const char *text, int indent) {
  const int limit = 79;
  int col = indent;
  const char *p = text;
  while (*p) {
    while (*p == ' ') p++;
    size_t len = strcspn(p, " ");
    if (!len) break;
    if (col > indent && col + 1 + (int)len > limit) {
      fprintf(f, "\n%*s", indent, "");
      col = indent;
    }
    if (col > indent) {
      fputc(' ', f);
      col++;
    }
    fwrite(p, 1, len, f);
    col += (int)len;
    p += len;
  }
  fputc('\n', f);
}

void cli_print_options(FILE *f, const cli_option *opts, size_t nopts, unsigned groups) {
  int width = 0;
  char left[128];
  for (size_t i = 0; i < nopts; i++) {
    if (!(opts[i].groups & groups)) continue;
    int w = snprintf(left, sizeof left, "--%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
                     opts[i].metavar ? opts[i].metavar : "");
    if (w > width) width = w;
  }
  if (width > 28) width = 28;
  for (size_t i = 0; i < nopts; i++) {
    const cli_option *o = &opts[i];
    if (!(o->groups & groups)) continue;
    snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "",
             o->metavar ? o->metavar : "");
    if ((int)strlen(left) > width)
      fprintf(f, "  %s\n  %*s  ", left, width, "");
    else
      fprintf(f, "  %-*s  ", width, left);
    print_wrapped(f, o->help, width + 4);
    if (o->alias) fprintf(f, "  %*s  (also --%s)\n", width, "", o->alias);
  }
}

/* ---- progress bar --------------------------------------------------------------------- */

void cli_format_duration(double seconds, char *buf, size_t size) {
  if (!isfinite(seconds) || seconds < 0) seconds = 0;
  if (seconds > 359999) seconds = 359999;
  long s = (long)(seconds + 0.5);
  if (s >= 3600)
    snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

void cli_progress_init(cli_progress *p, const char *label, int enabled) {
  memset(p, 0, sizeof *p);
  p->label = label;
  p->enabled = enabled;
  p->tty = isatty(STDERR_FILENO);
  p->start = sde_now();
  p->last = -1.0;
}

static int terminal_columns(void) {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
  return 80;
}

static void progress_text(const cli_progress *p, int done, int total, double now, char *tail,
                          size_t size, double *frac_out) {
  char el[32], eta[32];
  double elapsed = now - p->start;
  double frac = total > 0 ? (double)done / total : 0.0;
  if (frac < 0) frac = 0;
  if (frac > 1) frac = 1;
  cli_format_duration(elapsed, el, sizeof el);
  if (done > 0 && total > 0)
    cli_format_duration(elapsed * (double)(total - done) / done, eta, sizeof eta);
  else
    snprintf(eta, sizeof eta, "?");
  int digits = snprintf(NULL, 0, "%d", total);
  snprintf(tail, size, " %*d/%d %3d%% %s elapsed, ETA %s", digits, done, total,
           (int)(100.0 * frac), el, eta);
  *frac_out = frac;
}

/* A line of its own, for logs */
static void print_line(cli_progress *p, int done, int total, double now) {
  char tail[128];
  double frac;
  progress_text(p, done, total, now, tail, sizeof tail, &frac);
  fprintf(stderr, "%s:%s\n", p->label, tail);
  fflush(stderr);
}

/* The bar, redrawn in place on a terminal */
static void draw(cli_progress *p, int done, int total, double now) {
  char tail[128];
  double frac;
  progress_text(p, done, total, now, tail, sizeof tail, &frac);
  int tl = (int)strlen(tail);
  int cols = terminal_columns();
  int bar = cols - 1 - (int)strlen(p->label) - 3 - tl;
  if (bar > 40) bar = 40;
  fprintf(stderr, "\r%s ", p->label);
  if (bar >= 5) {
    int fill = (int)(frac * bar);
    fputc('[', stderr);
    for (int i = 0; i < bar; i++) fputc(i < fill ? '#' : '.', stderr);
    fputc(']', stderr);
  }
  fprintf(stderr, "%s\033[K", tail);
  fflush(stderr);
  p->drawn = 1;
}

int cli_progress_cb(void *user, int done, int total) {
  cli_progress *p = user;
  if (p && p->enabled && !__atomic_exchange_n(&p->busy, 1, __ATOMIC_ACQUIRE)) {
    double now = sde_now();
    if (p->tty) {
      if (p->last < 0 || now - p->last >= 0.1 || (done >= total && total > 0)) {
        p->last = now;
        draw(p, done, total, now);
      }
    } else if (now - (p->last < 0 ? p->start : p->last) >= CLI_PROGRESS_LINE_S) {
      p->last = now;
      print_line(p, done, total, now);
    }
    __atomic_store_n(&p->busy, 0, __ATOMIC_RELEASE);
  }
  return cli_interrupted ? 1 : 0;
}

void cli_progress_finish(cli_progress *p) {
  if (p->enabled && p->tty && p->drawn) {
    fputs("\r\033[K", stderr);
    fflush(stderr);
  }
  p->drawn = 0;
}

static void report_nonfinite(const char *cmd, const char *noun, int bad, int n) {
  if (bad)
    fprintf(stderr, "scoresde %s: warning: %d of %d %s%s hold%s NaN or Inf values (written "
            "as they are; black in a PNG)\n", cmd, bad, n, noun, n == 1 ? "" : "s",
            bad == 1 ? "s" : "");
}

int cli_warn_nonfinite(const char *cmd, const char *noun, const float *x, int n, int64_t D) {
  int bad = 0;
  for (int i = 0; i < n; i++)
    for (int64_t j = 0; j < D; j++)
      if (!isfinite(x[(int64_t)i * D + j])) {
        bad++;
        break;
      }
  report_nonfinite(cmd, noun, bad, n);
  return bad;
}

int cli_warn_nonfinite_f64(const char *cmd, const char *noun, const double *x, int n) {
  int bad = 0;
  for (int i = 0; i < n; i++) bad += !isfinite(x[i]);
  report_nonfinite(cmd, noun, bad, n);
  return bad;
}
