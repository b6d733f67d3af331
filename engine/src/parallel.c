/* The engine's thread pool: see parallel.h for the contract.
 *
 * One region runs at a time. Its caller posts a job (a body and a list of chunks), wakes
 * the workers and takes chunks itself; a worker that arrives joins in and takes chunks
 * from the same counter. The caller therefore never waits for a worker that has not
 * started: a worker that is slow to wake (descheduled by a busy process, or asleep) just
 * finds nothing left. The caller waits only for chunks already taken.
 *
 * Between regions a worker polls for SPIN_NS, yielding its core to anyone runnable, then
 * sleeps on a condition variable. The regions of a network forward mostly follow each
 * other within microseconds and a wake-up costs tens of microseconds on a VM; 50 us kept
 * the small networks' forward as fast as OpenMP's spinning threads on an idle machine,
 * 10-20 us did not (docs/BENCHMARKS.md). A second thread that calls while a region runs
 * (two pipelines, two elements) does not wait for the pool: it runs its loop serially.
 * The machine is busy then anyway, and waiting could only add latency; the pool goes to
 * whichever caller asks first once the region ends, so neither caller starves.
 *
 * Memory order: the flags that hand a job over (open, active, gen, sleepers, waiter) are
 * sequentially consistent; the pairs (worker: active++, then read open) / (caller: open
 * = 0, then read active) and (worker: sleepers++, then read gen) / (caller: gen++, then
 * read sleepers) are Dekker-style and need it. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifndef SPIN_NS
#define SPIN_NS 50000 /* how long an idle thread polls before it sleeps */
#endif
#define MAX_THREADS 256

typedef struct {
  sde_range_fn fn;
  void *ctx;
  int64_t n, chunk, nchunks; /* chunk k is [k·chunk, min(n, (k+1)·chunk)) */
} job;

static struct {
  pthread_mutex_t region; /* held by the caller of the running region */
  pthread_mutex_t mu;     /* with `wake` and `idle`: sleeping and waking */
  pthread_cond_t wake, idle;
  int nworkers;           /* started workers (the caller is not one) */
  pthread_t tid[MAX_THREADS];
  job job;                /* written by the caller while no worker can read it */
  _Alignas(64) atomic_uint gen; /* bumped to post a job, or to stop the workers */
  _Alignas(64) atomic_int open; /* the posted job may be joined */
  atomic_int active;      /* workers inside the job */
  atomic_int waiter;      /* the caller sleeps until active == 0 */
  atomic_int sleepers;    /* workers asleep on `wake` */
  atomic_int stop;
  _Alignas(64) atomic_llong next; /* next chunk to take */
  atomic_int want;        /* sde_parallel_set_threads; 0 = default */
} P = {
    .region = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .idle = PTHREAD_COND_INITIALIZER,
};

/* ---- thread count ------------------------------------------------------------------ */

static int clamp_threads(long n) { return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n; }

/* The CPUs we may run on: the affinity mask (taskset, cgroups cpusets), as libgomp. */
static int cpu_threads(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return clamp_threads(CPU_COUNT(&set));
  return clamp_threads(sysconf(_SC_NPROCESSORS_ONLN));
}

/* OMP_NUM_THREADS (its first entry) is still honoured: scripts and tests set it. */
static int default_threads(void) {
  const char *e = getenv("OMP_NUM_THREADS");
  long n = e ? strtol(e, NULL, 10) : 0;
  return n > 0 ? clamp_threads(n) : cpu_threads();
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static int default_n;
static void default_init(void) { default_n = default_threads(); }

int sde_parallel_threads(void) {
  int n = atomic_load(&P.want);
  if (n > 0) return n;
  pthread_once(&default_once, default_init);
  return default_n;
}

void sde_parallel_set_threads(int n) { atomic_store(&P.want, n > 0 ? clamp_threads(n) : cpu_threads()); }

/* ---- waiting: a short spin, then sleep ---------------------------------------------- */

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Polling with a deadline: spin_step returns 0 once SPIN_NS have passed since the first
 * call. `yield`: sched_yield between polls, so that on a loaded CPU an idle worker hands
 * its core to whoever is runnable. The caller of a region does not yield: it waits for
 * chunks that finish within microseconds, and a yield can cost it a whole time slice. */
typedef struct {
  int64_t end;
  int i;
} spinner;

static int spin_step(spinner *s, int yield) {
  if (s->i++ < 64) {
    cpu_relax();
    return 1;
  }
  int64_t t = now_ns();
  if (!s->end) s->end = t + SPIN_NS;
  if (t > s->end) return 0;
  if (yield) sched_yield();
  else cpu_relax();
  return 1;
}

/* A worker: returns the new gen once it differs from `seen`. */
static unsigned wait_gen(unsigned seen) {
  spinner s = {0, 0};
  while (atomic_load_explicit(&P.gen, memory_order_acquire) == seen) {
    if (spin_step(&s, 1)) continue;
    pthread_mutex_lock(&P.mu);
    atomic_fetch_add(&P.sleepers, 1);
    while (atomic_load(&P.gen) == seen) pthread_cond_wait(&P.wake, &P.mu);
    atomic_fetch_sub(&P.sleepers, 1);
    pthread_mutex_unlock(&P.mu);
  }
  return atomic_load(&P.gen);
}

/* Wakes the sleeping workers after gen was bumped. The lock makes sure that a worker
 * between its check of gen and pthread_cond_wait is not missed. */
static void wake_workers(void) {
  if (atomic_load(&P.sleepers) == 0) return;
  pthread_mutex_lock(&P.mu);
  pthread_cond_broadcast(&P.wake);
  pthread_mutex_unlock(&P.mu);
}

/* The caller: until every worker that joined the job has left it. */
static void wait_idle(void) {
  spinner s = {0, 0};
  while (atomic_load(&P.active) != 0) {
    if (spin_step(&s, 0)) continue;
    pthread_mutex_lock(&P.mu);
    atomic_store(&P.waiter, 1);
    while (atomic_load(&P.active) != 0) pthread_cond_wait(&P.idle, &P.mu);
    atomic_store(&P.waiter, 0);
    pthread_mutex_unlock(&P.mu);
  }
}

/* ---- the job -------------------------------------------------------------------------- */

static void run_chunk(const job *j, int64_t k) {
  int64_t i0 = k * j->chunk, i1 = i0 + j->chunk < j->n ? i0 + j->chunk : j->n;
  j->fn(j->ctx, i0, i1);
}

static void run_chunks(const job *j) {
  for (;;) {
    int64_t k = atomic_fetch_add_explicit(&P.next, 1, memory_order_relaxed);
    if (k >= j->nchunks) return;
    run_chunk(j, k);
  }
}

/* A worker joins the job only if it is still open after announcing itself in `active`;
 * the caller closes it before waiting for active == 0, so the job is not rewritten under
 * a worker. A worker that arrives late sees it closed (or the next job, already whole). */
static void join_job(void) {
  atomic_fetch_add(&P.active, 1);
  if (atomic_load(&P.open)) run_chunks(&P.job);
  if (atomic_fetch_sub(&P.active, 1) == 1 && atomic_load(&P.waiter)) {
    pthread_mutex_lock(&P.mu);
    pthread_cond_signal(&P.idle);
    pthread_mutex_unlock(&P.mu);
  }
}

static void *worker_main(void *arg) {
  unsigned seen = (unsigned)(uintptr_t)arg;
  for (;;) {
    seen = wait_gen(seen);
    if (atomic_load(&P.stop)) return NULL;
    join_job();
  }
}

/* ---- starting and stopping (under P.region) --------------------------------------------- */

static void stop_workers(void) {
  if (P.nworkers == 0) return;
  atomic_store(&P.stop, 1);
  atomic_fetch_add(&P.gen, 1);
  pthread_mutex_lock(&P.mu);
  pthread_cond_broadcast(&P.wake);
  pthread_mutex_unlock(&P.mu);
  for (int i = 0; i < P.nworkers; i++) pthread_join(P.tid[i], NULL);
  P.nworkers = 0;
  atomic_store(&P.stop, 0);
}

/* A child of fork() has only the forking thread: forget the workers (joining them would
 * hang at exit) and any lock a parent thread held. */
static void forget_after_fork(void) {
  pthread_mutex_init(&P.region, NULL);
  pthread_mutex_init(&P.mu, NULL);
  pthread_cond_init(&P.wake, NULL);
  pthread_cond_init(&P.idle, NULL);
  P.nworkers = 0;
  atomic_store(&P.open, 0);
  atomic_store(&P.active, 0);
  atomic_store(&P.waiter, 0);
  atomic_store(&P.sleepers, 0);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void atfork_init(void) { pthread_atfork(NULL, NULL, forget_after_fork); }

/* Workers block every signal, so that handlers (the CLI's Ctrl-C) run in the
 * application's threads. If a thread cannot be created we go on with fewer. */
static void start_workers(int n) {
  pthread_once(&atfork_once, atfork_init);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  unsigned g = atomic_load(&P.gen);
  while (P.nworkers < n &&
         pthread_create(&P.tid[P.nworkers], NULL, worker_main, (void *)(uintptr_t)g) == 0)
    P.nworkers++;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Lazily, at the first region, and again after sde_set_num_threads. */
static void resize(void) {
  int n = sde_parallel_threads() - 1;
  if (n == P.nworkers) return;
  stop_workers();
  start_workers(n);
}

/* Joins the workers when the library is unloaded or the program exits, so that no thread
 * runs our code after it is gone and valgrind sees no thread stacks. If a region is
 * running in another thread at exit we leave the workers alone. */
__attribute__((destructor)) static void pool_shutdown(void) {
  if (pthread_mutex_trylock(&P.region) != 0) return;
  stop_workers();
  pthread_mutex_unlock(&P.region);
}

/* ---- regions -------------------------------------------------------------------------- */

/* Without the pool the caller runs the same chunks, so a body sees the same ranges. */
static void run_serial(const job *j) {
  for (int64_t k = 0; k < j->nchunks; k++) run_chunk(j, k);
}

static void run(int64_t n, int64_t chunk, sde_range_fn fn, void *ctx) {
  const job j = {fn, ctx, n, chunk, (n + chunk - 1) / chunk};
  /* a nested call finds the region lock taken by its caller: it runs serially too */
  if (j.nchunks < 2 || sde_parallel_threads() < 2 || pthread_mutex_trylock(&P.region) != 0) {
    run_serial(&j);
    return;
  }
  resize();
  if (P.nworkers == 0) { /* no thread could be started */
    pthread_mutex_unlock(&P.region);
    run_serial(&j);
    return;
  }
  P.job = j;
  atomic_store_explicit(&P.next, 0, memory_order_relaxed);
  atomic_store(&P.open, 1);
  atomic_fetch_add(&P.gen, 1);
  wake_workers();
  run_chunks(&P.job);
  atomic_store(&P.open, 0);
  wait_idle();
  pthread_mutex_unlock(&P.region);
}

void sde_parallel_for(int64_t n, int64_t min_chunk, sde_range_fn fn, void *ctx) {
  if (n <= 0) return;
  if (min_chunk < 1) min_chunk = 1;
  int64_t parts = n / min_chunk, nt = sde_parallel_threads();
  if (parts > nt) parts = nt;
  if (parts < 1) parts = 1;
  run(n, (n + parts - 1) / parts, fn, ctx);
}

void sde_parallel_for_dynamic(int64_t n, int64_t grain, sde_range_fn fn, void *ctx) {
  if (n <= 0) return;
  run(n, grain < 1 ? 1 : grain, fn, ctx);
}
