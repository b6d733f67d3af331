/* Training tests (scoresde/train.h, `scoresde train`):
 *  - data loading: IDX (gzip) with 28 -> 32 padding, .npy, PNG folder;
 *  - a step is bit-identical for 1 and 2 threads;
 *  - data parallelism (sde_trainer_set_reduce) with 2 and 3 ranks as threads that sum
 *    through shared memory: the ranks stay bit-identical, match one process to 1e-5 and
 *    repeat bit for bit (the MPI transport: test_train_mpi);
 *  - an interrupted run (checkpoint, free, load) continued to N steps equals the
 *    uninterrupted run bit for bit (params, Adam m/v, EMA), through the API and through
 *    the CLI (`scoresde train --resume`);
 *  - the exported EMA model loads with sde_model_load and samples;
 *  - a time-dependent classifier trains to > 90 % accuracy on lightly noised data, and the
 *    guided score adds scale * grad log p(y|x,t) (checked against finite differences);
 *  - smoke training on a tiny config lowers the loss: the mean of the last 20 steps is below
 *    the mean of the first 20 by more than 4 standard errors of the difference and by 25 %.
 *
 *   test_train [--smoke-steps N] */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "scoresde/error.h"
#include "scoresde/io.h"
#include "scoresde/network.h"
#include "scoresde/rng.h"
#include "scoresde/sample.h"
#include "scoresde/scoresde.h"
#include "scoresde/train.h"
#include "tap.h"
#include "tiny_config.h"

static char tmpdir[200];

/* Synthetic 1-channel S x S images in [0,1]: a bright bar (horizontal or vertical, random
 * position) plus a soft blob; structured enough that denoising is learnable. */
static void make_images(int n, int S, float *x) {
  for (int i = 0; i < n; i++) {
    uint32_t r[4], ctr[4] = {(uint32_t)i, 1, 2, 3}, key[2] = {11, 0};
    sde_philox4x32(ctr, key, r);
    int vertical = r[0] & 1, pos = (int)(r[1] % (uint32_t)S);
    float cy = (float)(r[2] % (uint32_t)S), cx = (float)(r[3] % (uint32_t)S);
    float *im = x + (size_t)i * S * S;
    for (int y = 0; y < S; y++)
      for (int xx = 0; xx < S; xx++) {
        float v = 0.1f;
        if ((vertical ? xx : y) == pos) v = 0.9f;
        float d2 = (y - cy) * (y - cy) + (xx - cx) * (xx - cx);
        v += 0.5f * expf(-d2 / 4.0f);
        im[y * S + xx] = v > 1.0f ? 1.0f : v;
      }
  }
}

static void tiny_config(sde_ncsnpp_config *c, int S, double dropout) {
  sde_ncsnpp_config_ddpmpp_cifar10(c);
  shrink_config(c, 8, S);
  c->num_attn = 1;
  c->num_channels = 1;
  c->dropout = dropout;
  c->centered = 1;
  sde_init(&c->sde, SDE_VP);
}

static int same_state(const sde_trainer *a, const sde_trainer *b) {
  int64_t P = sde_trainer_num_params(a);
  if (P != sde_trainer_num_params(b) || sde_trainer_step_count(a) != sde_trainer_step_count(b))
    return 0;
  size_t n = (size_t)P * sizeof(float);
  return !memcmp(sde_trainer_params(a), sde_trainer_params(b), n) &&
         !memcmp(sde_trainer_ema(a), sde_trainer_ema(b), n) &&
         !memcmp(sde_trainer_adam_m(a), sde_trainer_adam_m(b), n) &&
         !memcmp(sde_trainer_adam_v(a), sde_trainer_adam_v(b), n);
}

static int run_steps(sde_trainer *t, const sde_dataset *ds, int n, double *losses) {
  for (int i = 0; i < n; i++) {
    sde_train_stats st;
    int rc = sde_trainer_step(t, ds, &st);
    if (rc) {
      TAP_DIAG("step failed: %s", sde_errmsg());
      return rc;
    }
    if (losses) losses[i] = st.loss;
  }
  return 0;
}

static void test_data(void) {
  /* IDX, gzip-compressed, 3 images of 28x28 -> padded to 32 */
  char path[512];
  snprintf(path, sizeof path, "%s/imgs-idx3-ubyte.gz", tmpdir);
  gzFile f = gzopen(path, "wb");
  unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28};
  gzwrite(f, hdr, 16);
  for (int i = 0; i < 3 * 28 * 28; i++) {
    unsigned char v = (unsigned char)((i * 7) % 256);
    gzwrite(f, &v, 1);
  }
  gzclose(f);
  sde_dataset ds;
  int rc = sde_dataset_load(path, 32, 1, &ds);
  int ok = rc == 0 && ds.n == 3 && ds.channels == 1 && ds.height == 32 && ds.width == 32;
  /* pixel (0,0) of image 1 lands at (2,2); the border is zero */
  ok = ok && fabsf(ds.data[1024 + 2 * 32 + 2] - (float)((28 * 28 * 7) % 256) / 255.0f) < 1e-6f &&
       ds.data[1024] == 0.0f && ds.data[1024 + 31 * 32 + 31] == 0.0f;
  TAP_CHECK(ok, "IDX (gzip) 3x28x28 loads, zero-padded to 32x32 (%s)", rc ? sde_errmsg() : "");
  sde_dataset_free(&ds);
  /* .npy [N,H,W] */
  float img[2 * 8 * 8];
  make_images(2, 8, img);
  snprintf(path, sizeof path, "%s/d.npy", tmpdir);
  int64_t shape[3] = {2, 8, 8};
  sde_npy_write(path, img, 3, shape);
  rc = sde_dataset_load(path, 8, 1, &ds);
  TAP_CHECK(rc == 0 && ds.n == 2 && ds.channels == 1 && !memcmp(ds.data, img, sizeof img),
            ".npy [N,H,W] loads as [N,1,H,W]");
  sde_dataset_free(&ds);
  /* PNG folder, RGB -> gray */
  char dir[300];
  snprintf(dir, sizeof dir, "%s/pngs", tmpdir);
  mkdir(dir, 0777);
  float rgb[3 * 8 * 8];
  for (int k = 0; k < 3; k++) memcpy(rgb + k * 64, img, 64 * sizeof(float));
  snprintf(path, sizeof path, "%s/a.png", dir);
  sde_png_write(path, rgb, 3, 8, 8);
  snprintf(path, sizeof path, "%s/b.png", dir);
  sde_png_write(path, rgb, 3, 8, 8);
  rc = sde_dataset_load(dir, 8, 1, &ds);
  TAP_CHECK(rc == 0 && ds.n == 2 && ds.channels == 1 && fabsf(ds.data[5] - img[5]) < 3e-3f,
            "PNG folder (RGB) loads as gray (%s)", rc ? sde_errmsg() : "");
  sde_dataset_free(&ds);
}

static void test_resume_api(void) {
  const int S = 8, N = 64;
  sde_dataset ds = {N, 1, S, S, malloc((size_t)N * S * S * sizeof(float)), NULL, 0};
  make_images(N, S, ds.data);
  sde_ncsnpp_config nc;
  tiny_config(&nc, S, 0.1); /* dropout on: its masks are keyed by the step too */
  sde_train_config tc;
  sde_train_config_init(&tc);
  tc.batch = 4;
  tc.warmup = 3;
  tc.ema_warmup = 1;
  tc.seed = 42;
  sde_trainer *a = NULL, *b = NULL, *c = NULL;
  int rc = sde_trainer_create(&nc, &tc, &a);
  if (!TAP_CHECK(rc == 0, "trainer create (%s)", rc ? sde_errmsg() : "")) return;
  sde_trainer_create(&nc, &tc, &b);
  sde_trainer_create(&nc, &tc, &c);
  TAP_CHECK(same_state(a, b), "two new runs with one seed start identical");
  /* uninterrupted: 6 steps, 2 threads */
  int nt = sde_get_num_threads();
  sde_set_num_threads(2);
  run_steps(a, &ds, 6, NULL);
  /* 1 thread */
  sde_set_num_threads(1);
  run_steps(c, &ds, 6, NULL);
  sde_set_num_threads(nt);
  TAP_CHECK(same_state(a, c), "6 steps with 1 and 2 threads are bit-identical");
  /* interrupted: 3 steps, checkpoint, free, load, 3 more */
  char path[512];
  snprintf(path, sizeof path, "%s/ckpt.safetensors", tmpdir);
  run_steps(b, &ds, 3, NULL);
  const char *meta[] = {"note", "interrupted"};
  rc = sde_trainer_save(b, path, meta, 1);
  sde_trainer_free(b);
  b = NULL;
  if (!rc) rc = sde_trainer_load(path, &b);
  TAP_CHECK(rc == 0 && sde_trainer_step_count(b) == 3, "checkpoint at step 3 reloads (%s)",
            rc ? sde_errmsg() : "");
  if (b) run_steps(b, &ds, 3, NULL);
  TAP_CHECK(b && same_state(a, b),
            "3 steps + checkpoint + reload + 3 steps == 6 uninterrupted steps, bit for bit "
            "(params, Adam m and v, EMA)");
  char *note = sde_checkpoint_metadata(path, "note");
  TAP_CHECK(note && !strcmp(note, "interrupted"), "checkpoint keeps extra metadata");
  free(note);
  /* the exported EMA model loads and samples */
  snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
  rc = sde_trainer_export(a, path, NULL, 0);
  sde_model *m = NULL;
  if (!rc) rc = sde_model_load(path, &m);
  int ok = rc == 0 && sde_network_is(m);
  if (ok) {
    int64_t P;
    const float *w = sde_network_params(m, &P);
    ok = P == sde_trainer_num_params(a) && !memcmp(w, sde_trainer_ema(a), (size_t)P * 4);
  }
  TAP_CHECK(ok, "exported model = the EMA weights, loads with sde_model_load (%s)",
            rc ? sde_errmsg() : "");
  if (m) {
    sde_sample_params sp;
    sde_sample_params_init(&sp);
    sp.steps = 20;
    float x[2 * 64];
    rc = sde_sample(m, &m->sde, &sp, 2, 0, x, NULL);
    int fin = rc == 0;
    for (int i = 0; i < 128 && fin; i++) fin = isfinite(x[i]);
    TAP_CHECK(fin, "the exported model samples (PC, 20 steps)");
    sde_model_free(m);
  }
  sde_trainer_free(a);
  sde_trainer_free(b);
  sde_trainer_free(c);
  free(ds.data);
}

/* Cosine decay: the rate sde_train_lr gives is the one the step uses, and past step D the
 * weights stop while the EMA goes on. */
static void test_lr_decay(void) {
  sde_train_config tc;
  sde_train_config_init(&tc);
  tc.lr = 1e-3;
  tc.warmup = 3;
  tc.lr_decay_steps = 10;
  const double pi = acos(-1.0);
  TAP_CHECK(fabs(sde_train_lr(&tc, 0) - 1e-3 / 3) < 1e-18 &&
                fabs(sde_train_lr(&tc, 2) - 1e-3 * 0.5 * (1 + cos(0.2 * pi))) < 1e-18 &&
                fabs(sde_train_lr(&tc, 5) - 0.5e-3) < 1e-15 && sde_train_lr(&tc, 10) == 0 &&
                sde_train_lr(&tc, 1000) == 0,
            "lr: warm-up times ½(1 + cos(π·step/D)), 0 from step D on");
  tc.lr_decay_steps = 0;
  TAP_CHECK(sde_train_lr(&tc, 1000) == 1e-3, "lr_decay_steps 0: constant after warm-up");
  tc.lr_decay_steps = 4;
  char *js = sde_train_config_to_json(&tc);
  sde_json *j = js ? sde_json_parse(js, strlen(js)) : NULL;
  sde_train_config back;
  sde_train_config_init(&back);
  TAP_CHECK(j && sde_train_config_from_json(j, &back) == 0 && back.lr_decay_steps == 4,
            "lr_decay_steps survives the checkpoint's JSON");
  sde_json_free(j);
  free(js);

  const int S = 8, N = 32;
  sde_dataset ds = {N, 1, S, S, malloc((size_t)N * S * S * sizeof(float)), NULL, 0};
  make_images(N, S, ds.data);
  sde_ncsnpp_config nc;
  tiny_config(&nc, S, 0.0);
  tc.batch = 4;
  tc.warmup = 2;
  tc.ema = 0.9;
  sde_trainer *t = NULL;
  if (!TAP_CHECK(sde_trainer_create(&nc, &tc, &t) == 0, "trainer create (%s)", sde_errmsg())) {
    free(ds.data);
    return;
  }
  const size_t n = (size_t)sde_trainer_num_params(t) * sizeof(float);
  float *p3 = malloc(n), *p4 = malloc(n), *e4 = malloc(n);
  int lr_ok = 1;
  for (int step = 0; step < 6; step++) {
    sde_train_stats st;
    if (sde_trainer_step(t, &ds, &st)) break;
    lr_ok &= st.lr == sde_train_lr(&tc, step);
    if (step == 2) memcpy(p3, sde_trainer_params(t), n);
    if (step == 3) {
      memcpy(p4, sde_trainer_params(t), n);
      memcpy(e4, sde_trainer_ema(t), n);
    }
  }
  TAP_CHECK(lr_ok, "each step reports the rate sde_train_lr gives");
  TAP_CHECK(memcmp(p3, p4, n) != 0, "step 3 (rate > 0) moves the weights");
  TAP_CHECK(!memcmp(p4, sde_trainer_params(t), n) && memcmp(e4, sde_trainer_ema(t), n) != 0,
            "steps 4-5 (rate 0) keep the weights bit for bit; the EMA still moves toward them");
  free(p3);
  free(p4);
  free(e4);
  sde_trainer_free(t);
  free(ds.data);
}

/* ---- data parallelism with threads as ranks ------------------------------------------- */

#define MAX_RANKS 4
typedef struct {
  pthread_barrier_t bar;
  int world;
  float *f[MAX_RANKS];
  double *d[MAX_RANKS];
} shared_sums;

typedef struct {
  shared_sums *sh;
  int rank;
  sde_trainer *t;
  const sde_dataset *ds;
  int steps, rc;
} rank_ctx;

/* Every rank adds the buffers in rank order into its own copy: the same bits everywhere. */
static int threads_sum_f32(float *buf, size_t n, void *ctx) {
  rank_ctx *r = ctx;
  shared_sums *sh = r->sh;
  float *acc = malloc(n * sizeof(float));
  sh->f[r->rank] = buf;
  pthread_barrier_wait(&sh->bar);
  for (size_t i = 0; i < n; i++) {
    float s = sh->f[0][i];
    for (int k = 1; k < sh->world; k++) s += sh->f[k][i];
    acc[i] = s;
  }
  pthread_barrier_wait(&sh->bar); /* all have read every buffer */
  memcpy(buf, acc, n * sizeof(float));
  free(acc);
  return SDE_OK;
}

static int threads_sum_f64(double *buf, size_t n, void *ctx) {
  rank_ctx *r = ctx;
  shared_sums *sh = r->sh;
  double acc[8];
  sh->d[r->rank] = buf;
  pthread_barrier_wait(&sh->bar);
  for (size_t i = 0; i < n && i < 8; i++) {
    acc[i] = sh->d[0][i];
    for (int k = 1; k < sh->world; k++) acc[i] += sh->d[k][i];
  }
  pthread_barrier_wait(&sh->bar);
  memcpy(buf, acc, (n < 8 ? n : 8) * sizeof(double));
  return SDE_OK;
}

static void *rank_main(void *arg) {
  rank_ctx *r = arg;
  r->rc = run_steps(r->t, r->ds, r->steps, NULL);
  return NULL;
}

/* world trainers (new runs of nc/tc) trained `steps` steps as the ranks of one run;
 * returns rank 0's trainer (NULL on failure) and whether all ranks ended identical. */
static sde_trainer *train_ranks(const sde_ncsnpp_config *nc, const sde_train_config *tc,
                                const sde_dataset *ds, int world, int steps, int *ranks_same) {
  shared_sums sh;
  rank_ctx rc[MAX_RANKS];
  pthread_t th[MAX_RANKS];
  sh.world = world;
  pthread_barrier_init(&sh.bar, NULL, (unsigned)world);
  int ok = 1;
  for (int r = 0; r < world; r++) {
    rc[r] = (rank_ctx){&sh, r, NULL, ds, steps, 0};
    sde_train_reduce red = {r, world, threads_sum_f32, threads_sum_f64, 0, &rc[r]};
    ok = ok && sde_trainer_create(nc, tc, &rc[r].t) == 0 && sde_trainer_set_reduce(rc[r].t, &red) == 0;
  }
  /* one engine thread per rank: the ranks are the parallelism here */
  int nt = sde_get_num_threads();
  sde_set_num_threads(1);
  for (int r = 0; r < world && ok; r++) pthread_create(&th[r], NULL, rank_main, &rc[r]);
  for (int r = 0; r < world && ok; r++) pthread_join(th[r], NULL);
  sde_set_num_threads(nt);
  pthread_barrier_destroy(&sh.bar);
  *ranks_same = ok;
  for (int r = 0; r < world && ok; r++) {
    ok = rc[r].rc == 0;
    if (r > 0) *ranks_same = *ranks_same && same_state(rc[0].t, rc[r].t) &&
                             sde_trainer_state_hash(rc[0].t) == sde_trainer_state_hash(rc[r].t);
  }
  for (int r = 1; r < world; r++) sde_trainer_free(rc[r].t);
  if (!ok) {
    sde_trainer_free(rc[0].t);
    return NULL;
  }
  return rc[0].t;
}

/* ||a - b|| / ||b|| over the parameters */
static double rel_diff(const sde_trainer *a, const sde_trainer *b) {
  const float *x = sde_trainer_params(a), *y = sde_trainer_params(b);
  double num = 0, den = 0;
  for (int64_t i = 0; i < sde_trainer_num_params(a); i++) {
    num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    den += (double)y[i] * y[i];
  }
  return sqrt(num / den);
}

static void test_data_parallel(void) {
  const int S = 8, N = 40, steps = 4;
  sde_dataset ds = {N, 1, S, S, malloc((size_t)N * S * S * sizeof(float)), NULL, 0};
  make_images(N, S, ds.data);
  sde_ncsnpp_config nc;
  tiny_config(&nc, S, 0.1); /* dropout masks are keyed by the global sample index too */
  sde_train_config tc;
  sde_train_config_init(&tc);
  tc.batch = 5; /* 3 ranks get 1, 2 and 2 samples */
  tc.warmup = 2;
  tc.seed = 5;
  sde_trainer *one = NULL;
  sde_trainer_create(&nc, &tc, &one);
  run_steps(one, &ds, steps, NULL);
  for (int world = 2; world <= 3; world++) {
    int same = 0, same2 = 0;
    sde_trainer *a = train_ranks(&nc, &tc, &ds, world, steps, &same);
    if (!TAP_CHECK(a != NULL, "%d ranks train %d steps (%s)", world, steps, a ? "" : sde_errmsg()))
      continue;
    TAP_CHECK(same, "%d ranks hold bit-identical states after %d steps", world, steps);
    double rel = rel_diff(a, one);
    TAP_CHECK(rel < 1e-5, "%d ranks vs one process after %d steps: parameters differ by %.3g "
              "(relative L2; only the order of the gradient sums differs)", world, steps, rel);
    sde_trainer *b = train_ranks(&nc, &tc, &ds, world, steps, &same2);
    TAP_CHECK(b && same_state(a, b), "%d ranks: a second run is bit-identical", world);
    sde_trainer_free(a);
    sde_trainer_free(b);
  }
  sde_train_reduce too_many = {0, 6, threads_sum_f32, threads_sum_f64, 0, NULL};
  int rc = sde_trainer_set_reduce(one, &too_many);
  TAP_CHECK(rc == SDE_EINVAL && strstr(sde_errmsg(), "6 ranks for a batch of 5"),
            "more ranks than samples refused: %s", sde_errmsg());
  sde_trainer_free(one);
  free(ds.data);
}

static int read_ckpt(const char *path, float **bufs, int64_t *P) {
  sde_safetensors *st;
  if (sde_st_open(path, &st)) return -1;
  const char *names[4] = {"params", "adam_m", "adam_v", "ema"};
  int rc = 0;
  for (int i = 0; i < 4 && !rc; i++) {
    const sde_st_tensor *t = sde_st_find(st, names[i]);
    if (!t) { rc = -1; break; }
    *P = t->numel;
    bufs[i] = malloc((size_t)t->numel * 4);
    rc = sde_st_read_f32(st, t, bufs[i]);
  }
  sde_st_close(st);
  return rc;
}

static void test_resume_cli(void) {
  const char *cli = getenv("SCORESDE_CLI");
  if (!cli) {
    TAP_CHECK(1, "# SKIP CLI resume (SCORESDE_CLI not set)");
    return;
  }
  const int S = 8, N = 32;
  float *img = malloc((size_t)N * S * S * 4);
  make_images(N, S, img);
  char data[512], cmd[4096], r1[512], r2[512];
  snprintf(data, sizeof data, "%s/cli.npy", tmpdir);
  int64_t shape[4] = {N, 1, S, S};
  sde_npy_write(data, img, 4, shape);
  free(img);
  snprintf(r1, sizeof r1, "%s/run_straight", tmpdir);
  snprintf(r2, sizeof r2, "%s/run_resumed", tmpdir);
  const char *common = "--preset tiny --image-size 8 --attn 4 --batch 4 --warmup 2 "
                       "--dropout 0.1 --seed 7 --sample-n 0 --quiet";
  snprintf(cmd, sizeof cmd, "%s train --data %s --out %s %s --steps 6", cli, data, r1, common);
  int s1 = system(cmd);
  snprintf(cmd, sizeof cmd, "%s train --data %s --out %s %s --steps 3", cli, data, r2, common);
  int s2 = system(cmd);
  /* the resumed run names only what changes; the rest comes from the checkpoint */
  snprintf(cmd, sizeof cmd, "%s train --out %s --resume --steps 6 --sample-n 2 "
           "--sample-steps 10 --quiet --export %s/cli_model.safetensors", cli, r2, tmpdir);
  int s3 = system(cmd);
  snprintf(cmd, sizeof cmd, "%s train --data %s --out %s %s --steps 6 2>/dev/null", cli, data,
           r2, common);
  int s4 = system(cmd); /* an existing run without --resume is refused */
  TAP_CHECK(s1 == 0 && s2 == 0 && s3 == 0 && s4 != 0,
            "scoresde train: 6 steps; 3 steps then --resume to 6 (exit %d %d %d); "
            "re-running without --resume refused", s1, s2, s3);
  char p1[600], p2[600];
  snprintf(p1, sizeof p1, "%s/checkpoint.safetensors", r1);
  snprintf(p2, sizeof p2, "%s/checkpoint.safetensors", r2);
  float *a[4] = {0}, *b[4] = {0};
  int64_t Pa = 0, Pb = 0;
  int ok = read_ckpt(p1, a, &Pa) == 0 && read_ckpt(p2, b, &Pb) == 0 && Pa == Pb;
  for (int i = 0; i < 4 && ok; i++) ok = !memcmp(a[i], b[i], (size_t)Pa * 4);
  TAP_CHECK(ok, "CLI: interrupted + resumed run == uninterrupted run, bit for bit");
  for (int i = 0; i < 4; i++) { free(a[i]); free(b[i]); }
  /* loss.csv of the resumed run has exactly steps 1..6 */
  snprintf(p2, sizeof p2, "%s/loss.csv", r2);
  FILE *f = fopen(p2, "r");
  int rows = 0, last = 0;
  char line[256];
  while (f && fgets(line, sizeof line, f))
    if (line[0] >= '0' && line[0] <= '9') {
      rows++;
      last = atoi(line);
    }
  if (f) fclose(f);
  TAP_CHECK(rows == 6 && last == 6, "loss.csv of the resumed run: %d rows, last step %d", rows,
            last);
  snprintf(p2, sizeof p2, "%s/samples/step_0000006.png", r2);
  struct stat sb;
  TAP_CHECK(stat(p2, &sb) == 0, "EMA sample grid written at the end");
  /* a classifier from .npy labels, then guided sampling through the CLI */
  float lab[32];
  for (int i = 0; i < N; i++) lab[i] = (float)(i % 2);
  char labels[512];
  snprintf(labels, sizeof labels, "%s/labels.npy", tmpdir);
  int64_t lshape[1] = {N};
  sde_npy_write(labels, lab, 1, lshape);
  snprintf(cmd, sizeof cmd, "%s train --data %s --labels %s --num-classes 2 --out %s/run_clf "
           "--preset tiny --image-size 8 --attn 4 --batch 4 --steps 3 --quiet "
           "--export %s/cli_clf.safetensors", cli, data, labels, tmpdir, tmpdir);
  int c1 = system(cmd);
  snprintf(cmd, sizeof cmd, "%s sample --model %s/cli_model.safetensors --classifier "
           "%s/cli_clf.safetensors --class 1 --guidance 3 --n 2 --steps 5 --quiet "
           "--out %s/guided.npy", cli, tmpdir, tmpdir, tmpdir);
  int c2 = system(cmd);
  snprintf(cmd, sizeof cmd, "%s sample --model %s/cli_model.safetensors --classifier "
           "%s/cli_clf.safetensors --class 2 --n 2 --steps 5 --quiet --out %s/bad.npy "
           "2>/dev/null", cli, tmpdir, tmpdir, tmpdir);
  int c3 = system(cmd);
  TAP_CHECK(c1 == 0 && c2 == 0 && c3 != 0,
            "CLI: train --num-classes 2 --labels .npy (exit %d), sample --classifier --class 1 "
            "(exit %d); class 2 of 2 refused", c1, c2);
}

static double mean_of(const double *x, int n, double *se) {
  double m = 0, v = 0;
  for (int i = 0; i < n; i++) m += x[i];
  m /= n;
  for (int i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
  v /= (n - 1);
  *se = sqrt(v / n);
  return m;
}

static void test_smoke(int steps) {
  const int S = 16, N = 512;
  sde_dataset ds = {N, 1, S, S, malloc((size_t)N * S * S * sizeof(float)), NULL, 0};
  make_images(N, S, ds.data);
  sde_ncsnpp_config nc;
  tiny_config(&nc, S, 0.0);
  sde_train_config tc;
  sde_train_config_init(&tc);
  tc.batch = 16;
  tc.lr = 2e-3;
  tc.warmup = 20;
  tc.ema = 0.99;
  tc.reduce_mean = 1;
  tc.seed = 3;
  sde_trainer *t;
  int rc = sde_trainer_create(&nc, &tc, &t);
  if (!TAP_CHECK(rc == 0, "smoke: trainer (%s)", rc ? sde_errmsg() : "")) return;
  double *loss = malloc((size_t)steps * sizeof(double));
  double t0 = sde_now();
  rc = run_steps(t, &ds, steps, loss);
  double secs = sde_now() - t0;
  if (!TAP_CHECK(rc == 0, "smoke: %d steps in %.1f s", steps, secs)) return;
  double se1, se2;
  double m1 = mean_of(loss, 20, &se1), m2 = mean_of(loss + steps - 20, 20, &se2);
  double z = (m1 - m2) / sqrt(se1 * se1 + se2 * se2);
  TAP_CHECK(z > 4.0 && m2 < 0.75 * m1,
            "smoke: mean loss of the first 20 steps %.4f (se %.4f) -> last 20 %.4f (se %.4f): "
            "drop %.0f %%, %.1f standard errors", m1, se1, m2, se2, 100 * (1 - m2 / m1), z);
  free(loss);
  sde_trainer_free(t);
  free(ds.data);
}

static int bar_label(int i) {
  uint32_t r[4], ctr[4] = {(uint32_t)i, 1, 2, 3}, key[2] = {11, 0};
  sde_philox4x32(ctr, key, r);
  return (int)(r[0] & 1); /* 1: vertical bar (make_images) */
}

static void test_classifier(void) {
  enum { S = 16, N = 256 };
  sde_dataset ds = {N, 1, S, S, malloc((size_t)N * S * S * sizeof(float)), malloc(N * sizeof(int)), 2};
  make_images(N, S, ds.data);
  for (int i = 0; i < N; i++) ds.labels[i] = bar_label(i);
  sde_ncsnpp_config nc;
  tiny_config(&nc, S, 0.0);
  nc.num_classes = 2;
  sde_train_config tc;
  sde_train_config_init(&tc);
  tc.batch = 16;
  tc.lr = 2e-3;
  tc.warmup = 20;
  tc.ema = 0.9;
  tc.random_flip = 0; /* a flip keeps a bar's orientation anyway */
  tc.seed = 5;
  sde_trainer *t = NULL;
  int rc = sde_trainer_create(&nc, &tc, &t);
  if (!TAP_CHECK(rc == 0, "classifier trainer (%s)", rc ? sde_errmsg() : "")) return;
  double loss[300];
  rc = run_steps(t, &ds, 300, loss);
  char path[512];
  snprintf(path, sizeof path, "%s/clf.safetensors", tmpdir);
  if (!rc) rc = sde_trainer_export(t, path, NULL, 0);
  sde_model *clf = NULL;
  if (!rc) rc = sde_model_load(path, &clf);
  if (!TAP_CHECK(rc == 0, "classifier: 300 steps, export, load (%s)", rc ? sde_errmsg() : "")) {
    sde_trainer_free(t);
    return;
  }
  /* accuracy on lightly noised training images (t = 0.05) */
  const int M = 64;
  const size_t D = (size_t)S * S;
  float *x = malloc(M * D * 4), *z = malloc(M * D * 4), tt[64], lp[128];
  double mc, sd;
  sde_marginal(&nc.sde, 0.05, &mc, &sd);
  for (int i = 0; i < M; i++) {
    sde_randn(9, (uint64_t)i, 0, z + i * D, (int64_t)D);
    for (size_t k = 0; k < D; k++)
      x[i * D + k] = (float)(mc * (2.0f * ds.data[i * D + k] - 1.0f) + sd * z[i * D + k]);
    tt[i] = 0.05f;
  }
  rc = sde_classifier_logp(clf, &nc.sde, M, x, tt, lp);
  int correct = 0;
  for (int i = 0; i < M; i++) correct += (lp[2 * i + 1] > lp[2 * i]) == ds.labels[i];
  TAP_CHECK(rc == 0 && correct >= 0.9 * M, "classifier: %d / %d correct at t = 0.05 (loss %.3f "
            "-> %.3f)", correct, M, loss[0], loss[299]);
  /* guidance: (guided - base) . u == scale * d/dh log p(y | x + h u, t) */
  sde_ncsnpp_config bc;
  tiny_config(&bc, S, 0.0);
  sde_ncsnpp *bn = NULL;
  sde_model *base = NULL, *g = NULL;
  sde_ncsnpp_create(&bc, &bn);
  sde_ncsnpp_init_params(bn, 1);
  rc = sde_network_create(&bc, sde_ncsnpp_param_buffer(bn, NULL), &base);
  sde_ncsnpp_free(bn);
  const double scale = 2.5;
  if (!rc) rc = sde_guided_create(base, clf, 1, scale, &g);
  if (!TAP_CHECK(rc == 0, "guided model (%s)", rc ? sde_errmsg() : "")) {
    sde_trainer_free(t);
    return;
  }
  const int n = 2;
  float *s0 = malloc(n * D * 4), *s1 = malloc(n * D * 4), *u = malloc(n * D * 4),
        *xp = malloc(n * D * 4), tq[2] = {0.2f, 0.6f};
  sde_randn(10, 0, 0, u, (int64_t)(n * D));
  sde_model_score(base, &nc.sde, n, x, tq, s0);
  rc = sde_model_score(g, &nc.sde, n, x, tq, s1);
  double lhs = 0;
  for (size_t k = 0; k < n * D; k++) lhs += ((double)s1[k] - s0[k]) * u[k];
  double Lv[2];
  const double h = 1e-2;
  for (int sgn = 0; sgn < 2; sgn++) {
    for (size_t k = 0; k < n * D; k++) xp[k] = (float)(x[k] + (sgn ? -h : h) * u[k]);
    sde_classifier_logp(clf, &nc.sde, n, xp, tq, lp);
    Lv[sgn] = (double)lp[1] + lp[3];
  }
  double rhs = scale * (Lv[0] - Lv[1]) / (2 * h);
  TAP_CHECK(rc == 0 && fabs(lhs - rhs) <= 1e-2 * fabs(rhs) + 1e-3,
            "guided score - score = %.3g grad log p: %.6g vs finite difference %.6g", scale, lhs,
            rhs);
  free(s0); free(s1); free(u); free(xp); free(x); free(z);
  sde_model_free(g);
  sde_trainer_free(t);
  free(ds.data);
  free(ds.labels);
}

/* (uncentred data, as the trainer feeds it) Mean over images of (mean_HW(eps_hat) - mean_HW(eps))^2 / mean_HW(eps)^2 at time tt:
 * how much of the noise's spatial mean (the image's mean, at large t) the EMA network misses
 * (1: none predicted). */
static double dc_miss(const sde_trainer *t, const sde_dataset *ds, double tt) {
  const sde_ncsnpp_config *c = sde_trainer_net_config(t);
  const int n = 64, D = c->num_channels * c->image_size * c->image_size,
            HW = c->image_size * c->image_size;
  sde_model *m = NULL;
  if (sde_trainer_ema_model(t, &m)) return NAN;
  float *x = malloc(sizeof(float) * n * D), *z = malloc(sizeof(float) * n * D),
        *out = malloc(sizeof(float) * n * D), tv[64], lab[64];
  double a, sd, miss = 0.0, ref = 0.0;
  sde_marginal(&c->sde, tt, &a, &sd);
  for (int i = 0; i < n; i++) {
    tv[i] = (float)tt;
    sde_randn(99, 0, (uint32_t)i, z + (size_t)i * D, D);
    const float *x0 = ds->data + (size_t)(i % ds->n) * D;
    for (int k = 0; k < D; k++) x[(size_t)i * D + k] = (float)(a * x0[k] + sd * z[(size_t)i * D + k]);
  }
  int rc = sde_network_labels(m, &c->sde, n, tv, lab);
  if (!rc) rc = sde_network_forward(m, n, x, lab, out);
  for (int i = 0; !rc && i < n * c->num_channels; i++) {
    double me = 0.0, mz = 0.0;
    for (int k = 0; k < HW; k++) {
      me += out[(size_t)i * HW + k];
      mz += z[(size_t)i * HW + k];
    }
    miss += (me / HW - mz / HW) * (me / HW - mz / HW);
    ref += (mz / HW) * (mz / HW);
  }
  free(x), free(z), free(out);
  sde_model_free(m);
  return rc ? NAN : miss / ref;
}

/* The global head: added to a trained network by sde_trainer_init_from it changes nothing
 * (bitwise); init-from refuses a run that has started and a network with nothing in common;
 * and on images whose mean varies from image to image it learns the noise's spatial mean,
 * which the network without it does not. */
static void test_global_head(void) {
  enum { S = 16, N = 256 };
  sde_ncsnpp_config nc, nh;
  tiny_config(&nc, S, 0.0);
  nc.centered = 0;
  nh = nc;
  nh.global_head = 1;
  sde_train_config tc;
  sde_train_config_init(&tc);
  tc.batch = 16;
  tc.lr = 2e-3;
  tc.warmup = 10;
  tc.ema = 0.9;
  tc.ema_warmup = 1;
  tc.reduce_mean = 1;
  tc.seed = 3;
  /* images: the bars and blobs of make_images, each plus its own offset in [-0.4, 0.4] */
  sde_dataset ds = {0};
  ds.n = N, ds.channels = 1, ds.height = ds.width = S;
  ds.data = malloc(sizeof(float) * N * S * S);
  make_images(N, S, ds.data);
  for (int i = 0; i < N; i++) {
    float off = 0.8f * ((float)((i * 37) % N) / (float)(N - 1) - 0.5f);
    for (int k = 0; k < S * S; k++) {
      float v = 0.5f * ds.data[(size_t)i * S * S + k] + 0.25f + off;
      ds.data[(size_t)i * S * S + k] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
  }
  sde_trainer *plain = NULL, *head = NULL;
  int rc = sde_trainer_create(&nc, &tc, &plain);
  if (!rc) rc = run_steps(plain, &ds, 5, NULL);
  tc.seed = 4;
  if (!rc) rc = sde_trainer_create(&nh, &tc, &head);
  sde_model *src = NULL;
  if (!rc) rc = sde_trainer_ema_model(plain, &src);
  int copied = 0, total = 0;
  if (!rc) rc = sde_trainer_init_from(head, src, &copied, &total);
  if (!TAP_CHECK(rc == 0 && copied == total - 6, "init-from copies all but the head's 6 tensors "
                 "(%d of %d; %s)", copied, total, rc ? sde_errmsg() : "")) {
    sde_model_free(src), sde_trainer_free(plain), sde_trainer_free(head), free(ds.data);
    return;
  }
  /* same outputs, bit for bit */
  sde_model *mh = NULL;
  rc = sde_trainer_ema_model(head, &mh);
  enum { n = 4, D = S * S };
  float x[n * D], lab[n] = {999.0f, 500.0f, 50.0f, 1.0f}, o1[n * D], o2[n * D];
  sde_randn(1, 2, 3, x, n * D);
  if (!rc) rc = sde_network_forward(src, n, x, lab, o1);
  if (!rc) rc = sde_network_forward(mh, n, x, lab, o2);
  TAP_CHECK(rc == 0 && !memcmp(o1, o2, sizeof o1),
            "a network with the (zero-initialised) head computes what it was copied from, bitwise");
  sde_model_free(mh);
  /* refusals */
  sde_ncsnpp_config other = nc;
  other.nf = 16;
  other.num_channels = 3;
  sde_trainer *o = NULL;
  sde_trainer_create(&other, &tc, &o);
  rc = o ? sde_trainer_init_from(o, src, &copied, &total) : -1;
  TAP_CHECK(rc == SDE_EINVAL && copied == 0, "init-from a network with no tensor in common: "
            "EINVAL (%s)", sde_errmsg());
  sde_trainer_free(o);
  rc = run_steps(plain, &ds, 1, NULL);
  rc = rc ? rc : sde_trainer_init_from(plain, src, NULL, NULL);
  TAP_CHECK(rc == SDE_EINVAL, "init-from after a step: EINVAL (%s)", sde_errmsg());
  sde_model_free(src);
  /* learning the mean: both train on (the head from the copied state) */
  const int more = 1000;
  rc = run_steps(plain, &ds, more, NULL);
  if (!rc) rc = run_steps(head, &ds, more, NULL);
  /* at t = 0.9 the mean of eps is that of x_t but for 0.5 % of its variance */
  double mp = dc_miss(plain, &ds, 0.9), mhd = dc_miss(head, &ds, 0.9);
  TAP_CHECK(rc == 0 && mhd < 0.5 * mp && mhd < 0.15,
            "after %d steps the share of the noise's spatial mean missed at t = 0.9: %.3f with "
            "the head, %.3f without", more, mhd, mp);
  sde_trainer_free(plain);
  sde_trainer_free(head);
  free(ds.data);
}

int main(int argc, char **argv) {
  int smoke = 600;
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], "--smoke-steps")) smoke = atoi(argv[i + 1]);
  snprintf(tmpdir, sizeof tmpdir, "/tmp/scoresde_test_train_%ld", (long)getpid());
  mkdir(tmpdir, 0777);
  test_data();
  test_resume_api();
  test_lr_decay();
  test_data_parallel();
  test_resume_cli();
  test_classifier();
  test_global_head();
  test_smoke(smoke);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd)) TAP_DIAG("could not remove %s", tmpdir);
  return tap_done();
}
