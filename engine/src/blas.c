/* Which GEMM kernels the loaded OpenBLAS runs, and which it should run on this CPU.
 *
 * Debian's OpenBLAS picks its kernels at load time from the CPU model it recognises; on a
 * CPU newer than the library it falls back to generic SSE3 kernels ("Prescott"), which
 * makes every GEMM of the networks 1.3-1.4x slower (docs/BENCHMARKS.md). The choice can
 * only be overridden through OPENBLAS_CORETYPE before the library loads, so the engine
 * reports the fix and the CLI re-executes itself with it (engine/cli/scoresde.c). */
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include <cblas.h>

#include "scoresde/scoresde.h"

#ifdef OPENBLAS_VERSION /* set by OpenBLAS's cblas.h; another CBLAS has no core names */
#define HAVE_CORENAME 1
#endif

const char *sde_blas_corename(void) {
#ifdef HAVE_CORENAME
  return openblas_get_corename();
#else
  return NULL;
#endif
}

/* Kernel sets that use FMA on AVX2 or AVX-512 (names as openblas_get_corename() spells
 * them, case-insensitively). Any other choice on such a CPU is a fallback. */
static int corename_is_fast(const char *name) {
  static const char *const fast[] = {"haswell", "skylakex", "cooperlake", "sapphirerapids",
                                     "zen",     "excavator", "steamroller"};
  for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++)
    if (strcasecmp(name, fast[i]) == 0) return 1;
  return 0;
}

const char *sde_blas_better_coretype(void) {
#if defined(HAVE_CORENAME) && defined(__x86_64__) && defined(__GNUC__)
  const char *name = openblas_get_corename();
  if (!name || corename_is_fast(name)) return NULL;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return NULL;
}
