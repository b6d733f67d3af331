/* `mpirun -np 2 scoresde train` against one process (docs/scale.md):
 *  - after a few steps the parameters, Adam moments and EMA of the 2-rank run are within
 *    1e-5 (relative L2) of the single-process run with the same --batch and seed;
 *  - two 2-rank runs are bit-identical;
 *  - a checkpoint of either resumes at the other process count and lands within 1e-5;
 *  - only rank 0 writes (loss.csv has one row per step), and more ranks than samples in
 *    a batch is a clean error.
 * Exit 77 (skip) when the tool was built without MPI or mpirun is missing. Environment:
 * SCORESDE_CLI (the tool), SCORESDE_SRC (source tree: the shapes32 images),
 * SCORESDE_MPIRUN (mpirun, empty when absent), SCORESDE_HAVE_MPI (1 when built with MPI). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scoresde/error.h"
#include "scoresde/train.h"
#include "tap.h"

static char tmpdir[200];
static const char *cli, *mpirun, *src;

/* the smallest preset on the 64 shapes of models/shapes32, dropout on */
#define RUN_ARGS "--preset tiny --image-size 32 --batch 8 --warmup 2 --lr 1e-3 --dropout 0.1 " \
                 "--seed 3 --sample-n 0 --quiet"

static int train(int np, const char *out, int steps, const char *extra) {
  char cmd[4096], launcher[1024] = "";
  if (np > 1)
    snprintf(launcher, sizeof launcher, "%s --allow-run-as-root --oversubscribe -np %d ",
             mpirun, np);
  snprintf(cmd, sizeof cmd,
           "cd %s && OMP_NUM_THREADS=1 %s%s train --data %s/models/shapes32 --out %s " RUN_ARGS
           " --steps %d %s", tmpdir, launcher, cli, src, out, steps, extra);
  int s = system(cmd);
  return WIFEXITED(s) ? WEXITSTATUS(s) : -1;
}

static sde_trainer *load(const char *run) {
  char p[600];
  snprintf(p, sizeof p, "%s/%s/checkpoint.safetensors", tmpdir, run);
  sde_trainer *t = NULL;
  if (sde_trainer_load(p, &t)) TAP_DIAG("%s: %s", p, sde_errmsg());
  return t;
}

/* the largest relative L2 difference over params, Adam m, v and EMA; -1 if unreadable */
static double rel_diff(const sde_trainer *a, const sde_trainer *b) {
  if (!a || !b || sde_trainer_num_params(a) != sde_trainer_num_params(b) ||
      sde_trainer_step_count(a) != sde_trainer_step_count(b))
    return -1;
  const float *x[4] = {sde_trainer_params(a), sde_trainer_adam_m(a), sde_trainer_adam_v(a),
                       sde_trainer_ema(a)};
  const float *y[4] = {sde_trainer_params(b), sde_trainer_adam_m(b), sde_trainer_adam_v(b),
                       sde_trainer_ema(b)};
  double worst = 0;
  for (int k = 0; k < 4; k++) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < sde_trainer_num_params(a); i++) {
      double d = (double)x[k][i] - y[k][i];
      num += d * d;
      den += (double)y[k][i] * y[k][i];
    }
    double r = den > 0 ? sqrt(num / den) : sqrt(num);
    if (r > worst) worst = r;
  }
  return worst;
}

static int count_rows(const char *run) {
  char p[600], line[256];
  snprintf(p, sizeof p, "%s/%s/loss.csv", tmpdir, run);
  FILE *f = fopen(p, "r");
  int rows = 0;
  while (f && fgets(line, sizeof line, f)) rows += line[0] >= '0' && line[0] <= '9';
  if (f) fclose(f);
  return rows;
}

int main(void) {
  cli = getenv("SCORESDE_CLI");
  mpirun = getenv("SCORESDE_MPIRUN");
  src = getenv("SCORESDE_SRC");
  const char *have = getenv("SCORESDE_HAVE_MPI");
  if (!cli || !src || !mpirun || !*mpirun || !have || strcmp(have, "1")) {
    printf("1..0 # SKIP scoresde built without MPI, or no mpirun\n");
    return 77;
  }
  snprintf(tmpdir, sizeof tmpdir, "/tmp/scoresde_test_train_mpi_%ld", (long)getpid());
  mkdir(tmpdir, 0777);
  const int steps = 5;
  int s1 = train(1, "one", steps, "");
  int s2 = train(2, "two_a", steps, "");
  int s3 = train(2, "two_b", steps, "");
  TAP_CHECK(s1 == 0 && s2 == 0 && s3 == 0, "%d steps in 1 process and twice in 2 ranks (exit "
            "%d %d %d)", steps, s1, s2, s3);
  sde_trainer *one = load("one"), *a = load("two_a"), *b = load("two_b");
  double rel = rel_diff(a, one);
  TAP_CHECK(rel >= 0 && rel < 1e-5, "2 ranks vs 1 process after %d steps: params, Adam m/v "
            "and EMA within %.3g relative (tolerance 1e-5)", steps, rel);
  TAP_CHECK(rel_diff(a, b) == 0.0 && sde_trainer_state_hash(a) == sde_trainer_state_hash(b),
            "two 2-rank runs are bit-identical");
  TAP_CHECK(count_rows("two_a") == steps, "rank 0 alone writes loss.csv: %d rows",
            count_rows("two_a"));
  /* resume at the other process count */
  int r1 = train(2, "resume_2_1", 3, "");
  int r2 = train(1, "resume_2_1", steps, "--resume");
  int r3 = train(1, "resume_1_2", 3, "");
  int r4 = train(2, "resume_1_2", steps, "--resume");
  sde_trainer *c = load("resume_2_1"), *d = load("resume_1_2");
  double rc = rel_diff(c, one), rd = rel_diff(d, one);
  TAP_CHECK(r1 == 0 && r2 == 0 && rc >= 0 && rc < 1e-5,
            "3 steps on 2 ranks, resumed to %d on 1 process: %.3g from the 1-process run", steps,
            rc);
  TAP_CHECK(r3 == 0 && r4 == 0 && rd >= 0 && rd < 1e-5,
            "3 steps on 1 process, resumed to %d on 2 ranks: %.3g from the 1-process run", steps,
            rd);
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd %s && %s --allow-run-as-root --oversubscribe -np 2 %s train --data "
           "%s/models/shapes32 --out few --preset tiny --image-size 32 --batch 1 --steps 1 "
           "--sample-n 0 > few.log 2>&1", tmpdir, mpirun, cli, src);
  int s = system(cmd);
  snprintf(cmd, sizeof cmd, "grep -q '2 ranks for a batch of 1' %s/few.log", tmpdir);
  TAP_CHECK(s != 0 && system(cmd) == 0, "2 ranks for a batch of 1: a clean error");
  sde_trainer_free(one);
  sde_trainer_free(a);
  sde_trainer_free(b);
  sde_trainer_free(c);
  sde_trainer_free(d);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd)) TAP_DIAG("could not remove %s", tmpdir);
  return tap_done();
}
