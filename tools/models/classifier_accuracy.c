/* Test accuracy of a time-dependent classifier (models/fashion-mnist-32-classifier.md):
 * the first M Fashion-MNIST test images, scaled to [-1,1], noised to x_t at several t
 * (noise keyed by (123, image, t index)), classified by argmax log p(y | x_t, t).
 *
 *   cc -O2 -o /tmp/clfacc tools/models/classifier_accuracy.c -Iengine/include \
 *      -Lbuild/engine -lscoresde -Wl,-rpath,$PWD/build/engine
 *   /tmp/clfacc models/fashion-mnist-32-classifier.safetensors [M] */
#include <stdio.h>
#include <stdlib.h>

#include "scoresde/network.h"
#include "scoresde/scoresde.h"
#include "scoresde/train.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CLASSIFIER.safetensors [M]\n", argv[0]);
    return 2;
  }
  sde_model *clf;
  sde_dataset ds;
  if (sde_model_load(argv[1], &clf) ||
      sde_dataset_load("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", 32, 1, &ds)) {
    fprintf(stderr, "%s\n", sde_errmsg());
    return 1;
  }
  const int K = sde_network_config(clf)->num_classes, D = 1024;
  int M = argc > 2 ? atoi(argv[2]) : 1000;
  if (M > ds.n) M = ds.n;
  float *x = malloc((size_t)M * D * 4), *z = malloc(D * 4), *t = malloc((size_t)M * 4),
        *lp = malloc((size_t)M * K * 4);
  const double ts[5] = {0.01, 0.1, 0.3, 0.5, 0.8};
  for (int k = 0; k < 5; k++) {
    double mc, sd;
    sde_marginal(&clf->sde, ts[k], &mc, &sd);
    for (int i = 0; i < M; i++) {
      sde_randn(123, (uint64_t)i, (uint32_t)k, z, D);
      for (int j = 0; j < D; j++)
        x[(size_t)i * D + j] = (float)(mc * (2 * ds.data[(size_t)i * D + j] - 1) + sd * z[j]);
      t[i] = (float)ts[k];
    }
    for (int i0 = 0; i0 < M; i0 += 50) {
      int n = M - i0 < 50 ? M - i0 : 50;
      if (sde_classifier_logp(clf, &clf->sde, n, x + (size_t)i0 * D, t + i0, lp + (size_t)i0 * K)) {
        fprintf(stderr, "%s\n", sde_errmsg());
        return 1;
      }
    }
    int correct = 0;
    for (int i = 0; i < M; i++) {
      int b = 0;
      for (int c = 1; c < K; c++)
        if (lp[i * K + c] > lp[i * K + b]) b = c;
      correct += b == ds.labels[i];
    }
    printf("t=%.2f accuracy %d/%d = %.1f%%\n", ts[k], correct, M, 100.0 * correct / M);
  }
  free(x); free(z); free(t); free(lp);
  sde_dataset_free(&ds);
  sde_model_free(clf);
  return 0;
}
