/* The engine's thread pool (engine/src/parallel.c): every index is handed out exactly
 * once, for any thread count, static or dynamic; nested calls and concurrent callers run
 * correctly; the thread count follows OMP_NUM_THREADS and sde_parallel_set_threads. Also
 * built with ThreadSanitizer (test_parallel_tsan) with the pool compiled in. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../engine/src/parallel.h"
#include "tap.h"

typedef struct {
  atomic_int *hits;   /* per index */
  atomic_int calls;
  atomic_int bad;     /* a range outside [0, n) or empty */
  int64_t n;
  pthread_t owner;    /* nested: the thread that must run the inner calls */
  atomic_int foreign; /* nested: inner calls made by another thread */
} cover;

static void count_range(void *ctx, int64_t i0, int64_t i1) {
  cover *c = ctx;
  atomic_fetch_add(&c->calls, 1);
  if (i0 < 0 || i1 > c->n || i0 >= i1) atomic_store(&c->bad, 1);
  for (int64_t i = i0; i < i1 && i < c->n; i++) atomic_fetch_add(&c->hits[i], 1);
}

/* Runs [0, n) once; returns the number of calls, or -1 if an index was missed or doubled. */
static int run_cover(int64_t n, int64_t chunk, int dynamic) {
  cover c = {.n = n};
  c.hits = calloc(n > 0 ? (size_t)n : 1, sizeof *c.hits);
  if (dynamic) sde_parallel_for_dynamic(n, chunk, count_range, &c);
  else sde_parallel_for(n, chunk, count_range, &c);
  int ok = !atomic_load(&c.bad);
  for (int64_t i = 0; i < n; i++) ok &= atomic_load(&c.hits[i]) == 1;
  free(c.hits);
  return ok ? atomic_load(&c.calls) : -1;
}

static void test_cover(void) {
  static const int64_t ns[] = {1, 2, 3, 7, 100, 1000, 100003};
  for (int nt = 1; nt <= 4; nt++) {
    sde_parallel_set_threads(nt);
    int ok = sde_parallel_threads() == nt;
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
      int64_t n = ns[k];
      ok &= run_cover(n, 1, 0) >= 1 && run_cover(n, 1, 0) <= nt;
      ok &= run_cover(n, 5, 0) >= 1;
      ok &= run_cover(n, n, 0) == 1; /* min_chunk = n: one call, serially */
      ok &= run_cover(n, 1, 1) == n;
      ok &= run_cover(n, 64, 1) == (int)((n + 63) / 64);
    }
    TAP_CHECK(ok, "%d thread(s): every index exactly once, static and dynamic", nt);
  }
  TAP_CHECK(run_cover(0, 1, 0) == 0 && run_cover(-3, 1, 1) == 0, "empty loops make no call");
}

/* nested: each outer range runs an inner loop, which must run serially in its thread,
 * cut into the same ranges as at top level */
static void inner_range(void *ctx, int64_t i0, int64_t i1) {
  cover *c = ctx;
  if (!pthread_equal(pthread_self(), c->owner)) atomic_store(&c->foreign, 1);
  count_range(c, i0, i1);
}

static void outer_range(void *ctx, int64_t i0, int64_t i1) {
  atomic_int *ok = ctx;
  for (int64_t i = i0; i < i1; i++) {
    cover c = {.n = 1000, .owner = pthread_self()};
    c.hits = calloc(1000, sizeof *c.hits);
    sde_parallel_for(1000, 1, inner_range, &c);
    int good = !atomic_load(&c.foreign) && atomic_load(&c.calls) == 3; /* 3 ranges, 1 thread */
    for (int k = 0; k < 1000; k++) good &= atomic_load(&c.hits[k]) == 1;
    if (!good) atomic_store(ok, 0);
    free(c.hits);
  }
}

static void test_nested(void) {
  sde_parallel_set_threads(3);
  atomic_int ok = 1;
  sde_parallel_for_dynamic(12, 1, outer_range, &ok);
  TAP_CHECK(atomic_load(&ok), "nested loops run whole and serially in the calling thread");
}

/* Several application threads call at once (two pipelines), one of them changing the
 * thread count meanwhile. */
static atomic_int concurrent_ok = 1;

static void *caller(void *arg) {
  int id = (int)(intptr_t)arg;
  for (int r = 0; r < 300; r++) {
    if (id == 0 && r % 50 == 0) sde_parallel_set_threads(1 + r / 50 % 3);
    int64_t n = 1 + (r * 7919 + id * 104729) % 5000;
    if (run_cover(n, 1, r % 2) < 0) atomic_store(&concurrent_ok, 0);
  }
  return NULL;
}

static void test_concurrent(void) {
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, caller, (void *)(intptr_t)i);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  TAP_CHECK(atomic_load(&concurrent_ok), "4 threads calling at once (thread count changing)");
}

/* The work is shared: chunks that sleep leave the caller's core free, so a worker takes
 * some of them (retried: on a loaded machine a worker may not get a core in time). */
typedef struct {
  pthread_t first;
  atomic_int others;
} who;

static void sleepy_range(void *ctx, int64_t i0, int64_t i1) {
  who *w = ctx;
  if (!pthread_equal(pthread_self(), w->first)) atomic_store(&w->others, 1);
  struct timespec ts = {0, 2000000 * (long)(i1 - i0)};
  nanosleep(&ts, NULL);
}

static void test_shared(void) {
  sde_parallel_set_threads(2);
  int shared = 0;
  for (int attempt = 0; attempt < 20 && !shared; attempt++) {
    who w = {.first = pthread_self()};
    sde_parallel_for_dynamic(8, 1, sleepy_range, &w);
    shared = atomic_load(&w.others);
  }
  TAP_CHECK(shared, "a worker thread takes part");
}

/* A forked child (gst-check forks per test) uses the pool with fresh workers and exits
 * without waiting for its parent's. Not under ThreadSanitizer, which cannot start threads
 * after a fork. */
#ifndef __SANITIZE_THREAD__
static void test_fork(void) {
  sde_parallel_set_threads(2);
  int ok = run_cover(1000, 1, 1) > 0;
  pid_t pid = fork();
  if (pid == 0) {
    int good = run_cover(1000, 1, 1) == 1000;
    sde_parallel_set_threads(3);
    good &= run_cover(1000, 1, 1) == 1000;
    exit(good ? 0 : 1); /* the library's destructor joins the child's workers */
  }
  int status = -1;
  ok &= pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  TAP_CHECK(ok, "a forked child runs loops and exits");
}
#endif

int main(void) {
  const char *e = getenv("OMP_NUM_THREADS");
  if (e && atoi(e) > 0)
    TAP_CHECK(sde_parallel_threads() == atoi(e), "default thread count from OMP_NUM_THREADS=%s", e);
  test_cover();
  test_nested();
  test_concurrent();
  test_shared();
#ifndef __SANITIZE_THREAD__
  test_fork();
#endif
  sde_parallel_set_threads(0);
  TAP_CHECK(sde_parallel_threads() >= 1, "0 = all CPUs (%d)", sde_parallel_threads());
  return tap_done();
}
