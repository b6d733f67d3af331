/* Helpers of the `scoresde` tool: a table-driven long-option parser, a progress bar
 * and Ctrl-C handling. Nothing here knows about score models. */
#ifndef SCORESDE_CLI_UTIL_H
#define SCORESDE_CLI_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses of the tool. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_ERROR = 1, CLI_EXIT_USAGE = 2, CLI_EXIT_CANCELLED = 130 };

typedef enum {
  CLI_FLAG,   /* int, set to 1; takes no value */
  CLI_STR,    /* const char * (points into argv) */
  CLI_INT,    /* int in [lo, hi] */
  CLI_INT64,  /* int64_t in [lo, hi] */
  CLI_U64,    /* uint64_t, any non-negative decimal or 0x hex */
  CLI_DOUBLE, /* finite double in [lo, hi]; `open` makes a bound exclusive */
} cli_type;

enum { CLI_OPEN_LO = 1, CLI_OPEN_HI = 2 };

/* One long option, --name VALUE or --name=VALUE. The value lands at (char *)base + offset. */
typedef struct {
  const char *name;    /* without the leading "--" */
  const char *alias;   /* a second name, or NULL */
  cli_type type;
  size_t offset;
  double lo, hi;       /* inclusive range of INT/INT64/DOUBLE values */
  int open;            /* CLI_OPEN_LO: the value must be > lo; CLI_OPEN_HI: < hi */
  const char *metavar; /* shown in help: "FILE", "N", ... (NULL for flags) */
  const char *help;    /* one line, with the default in parentheses */
  unsigned groups;     /* the option is accepted by commands whose groups intersect this */
} cli_option;

/* Parses args[0..argc) (the arguments after the command name) into base. Only options
 * whose groups intersect `groups` are accepted. "--help"/"-h" sets *help and stops.
 * On a usage error it prints "scoresde CMD: message" and a hint to stderr and returns
 * CLI_EXIT_USAGE; otherwise 0. */
int cli_parse(const char *cmd, int argc, char **args, const cli_option *opts, size_t nopts,
              unsigned groups, void *base, int *help);

/* Prints the options of `groups` as an aligned two-column list. */
void cli_print_options(FILE *f, const cli_option *opts, size_t nopts, unsigned groups);

/* Prints "scoresde CMD: message" and "Try 'scoresde CMD --help'." to stderr; returns
 * CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Set by the SIGINT handler; the progress callback turns it into a cancellation. */
extern volatile sig_atomic_t cli_interrupted;
/* First Ctrl-C cancels the running computation between two steps; a second one kills. */
void cli_install_sigint(void);

/* Progress on stderr when `enabled` (the user did not ask for quiet): a bar redrawn at
 * most 10 times a second on a terminal, else a plain line every CLI_PROGRESS_LINE_S
 * seconds, so that logs of long runs show they are alive. */
#define CLI_PROGRESS_LINE_S 5.0
typedef struct {
  const char *label;
  int enabled;
  int tty;       /* stderr is a terminal: draw a bar in place */
  int drawn;     /* something is on the line that finish() must clear */
  int busy;      /* reentrancy guard: callbacks may come from worker threads */
  double start;  /* sde_now() at init */
  double last;   /* time of the last redraw */
} cli_progress;

void cli_progress_init(cli_progress *p, const char *label, int enabled);
/* An sde_progress_fn: user is a cli_progress. Returns non-zero after Ctrl-C. */
int cli_progress_cb(void *user, int done, int total);
/* Clears the bar's line. */
void cli_progress_finish(cli_progress *p);

/* Every command that writes results says so on stderr when some hold NaN or Inf (a
 * diverging sampler, say), in one form: "scoresde CMD: warning: K of N <noun>s hold(s)
 * NaN or Inf values (written as they are; black in a PNG)". x is [n, D]; returns K. */
int cli_warn_nonfinite(const char *cmd, const char *noun, const float *x, int n, int64_t D);
/* The same for n doubles (one per output). */
int cli_warn_nonfinite_f64(const char *cmd, const char *noun, const double *x, int n);

/* "1:05", "12:03:09" */
void cli_format_duration(double seconds, char *buf, size_t size);

#endif
