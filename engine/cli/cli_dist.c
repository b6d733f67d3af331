/* The process group of data-parallel training (cli_dist.h, docs/scale.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_dist.h"
#include "cli_util.h"
#include "scoresde/error.h"
#include "scoresde/scoresde.h"

#ifdef SDE_HAVE_MPI
#include <mpi.h>
#endif
#ifdef SDE_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

/* The size a launcher announces in the environment (0: not started by one). Open MPI's
 * mpirun sets OMPI_COMM_WORLD_SIZE, MPICH's and Slurm's PMI launchers PMI_SIZE, PMIx
 * launchers PMIX_RANK. */
static int launcher_world_size(void) {
  const char *v = getenv("OMPI_COMM_WORLD_SIZE");
  if (!v || !*v) v = getenv("PMI_SIZE");
  if (v && *v) return atoi(v) > 0 ? atoi(v) : 1;
  return getenv("PMIX_RANK") ? 1 : 0;
}

const char *cli_dist_transport(const cli_dist *d) {
  if (d->world == 1) return "none";
  return d->nccl ? "nccl" : "mpi";
}

#ifdef SDE_HAVE_MPI

/* MPI counts are int: long buffers go in pieces (the same pieces on every rank) */
#define MPI_CHUNK ((size_t)1 << 30)

static int mpi_sum_f32(float *buf, size_t n, void *ctx) {
  cli_dist *d = ctx;
  const double t0 = sde_now();
  for (size_t i = 0; i < n; i += MPI_CHUNK) {
    int cnt = (int)(n - i < MPI_CHUNK ? n - i : MPI_CHUNK);
    if (MPI_Allreduce(MPI_IN_PLACE, buf + i, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) !=
        MPI_SUCCESS)
      return sde_fail(SDE_EIO, "MPI_Allreduce of %d floats failed", cnt);
  }
  d->sum_seconds += sde_now() - t0;
  d->sum_calls++;
  d->sum_bytes += (double)n * sizeof(float);
  return SDE_OK;
}

static int mpi_sum_f64(double *buf, size_t n, void *ctx) {
  (void)ctx;
  if (MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) !=
      MPI_SUCCESS)
    return sde_fail(SDE_EIO, "MPI_Allreduce of %zu doubles failed", n);
  return SDE_OK;
}

int cli_dist_init(cli_dist *d) {
  memset(d, 0, sizeof *d);
  d->world = 1;
  d->reduce.world = 1;
  if (launcher_world_size() == 0) return 0; /* a plain start: no MPI_Init at all */
  if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
    fprintf(stderr, "scoresde train: MPI_Init failed\n");
    return CLI_EXIT_ERROR;
  }
  d->mpi = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &d->world);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &d->local_rank);
  MPI_Comm_free(&node);
  d->reduce.rank = d->rank;
  d->reduce.world = d->world;
  d->reduce.sum_f32 = mpi_sum_f32;
  d->reduce.sum_f64 = mpi_sum_f64;
  d->reduce.ctx = d;
  return 0;
}

int cli_dist_or(const cli_dist *d, int bits) {
  if (d->world == 1) return bits;
  int out = 0;
  MPI_Allreduce(&bits, &out, 1, MPI_INT, MPI_BOR, MPI_COMM_WORLD);
  return out;
}

int cli_dist_bcast_int(const cli_dist *d, int v) {
  if (d->world > 1) MPI_Bcast(&v, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return v;
}

int cli_dist_same_u64(const cli_dist *d, uint64_t v) {
  if (d->world == 1) return 1;
  unsigned long long lo = v, hi = v, mn = 0, mx = 0;
  MPI_Allreduce(&lo, &mn, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&hi, &mx, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
  return mn == mx;
}

int cli_dist_abort(const cli_dist *d, int code) {
  if (d->mpi && d->world > 1) {
    fflush(NULL);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  return code;
}

#ifdef SDE_HAVE_NCCL
typedef struct {
  ncclComm_t comm;
  cudaStream_t stream;
  int device;
} nccl_state;

/* buf is device memory of the trainer's backend, every kernel writing it finished */
static int nccl_sum_f32(float *buf, size_t n, void *ctx) {
  cli_dist *d = ctx;
  nccl_state *s = d->nccl;
  const double t0 = sde_now();
  if (cudaSetDevice(s->device) != cudaSuccess)
    return sde_fail(SDE_EIO, "cudaSetDevice(%d) failed", s->device);
  ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, s->comm, s->stream);
  if (r != ncclSuccess) return sde_fail(SDE_EIO, "ncclAllReduce: %s", ncclGetErrorString(r));
  cudaError_t e = cudaStreamSynchronize(s->stream);
  if (e != cudaSuccess) return sde_fail(SDE_EIO, "ncclAllReduce: %s", cudaGetErrorString(e));
  d->sum_seconds += sde_now() - t0;
  d->sum_calls++;
  d->sum_bytes += (double)n * sizeof(float);
  return SDE_OK;
}

int cli_dist_use_nccl(cli_dist *d, int device_id) {
  if (d->world == 1) return 1;
  nccl_state *s = calloc(1, sizeof *s);
  ncclUniqueId id;
  int ok = s != NULL;
  if (ok && d->rank == 0) ok = ncclGetUniqueId(&id) == ncclSuccess;
  ok = !cli_dist_or(d, !ok); /* every rank learns of a failure before the broadcast */
  if (ok) {
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    s->device = device_id;
    ok = cudaSetDevice(device_id) == cudaSuccess &&
         cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking) == cudaSuccess &&
         ncclCommInitRank(&s->comm, d->world, id, d->rank) == ncclSuccess;
  }
  if (!cli_dist_or(d, !ok)) {
    d->nccl = s;
    d->reduce.sum_f32 = nccl_sum_f32;
    d->reduce.device_buffers = 1;
    return 0;
  }
  fprintf(stderr, "scoresde train: rank %d: cannot set up NCCL on CUDA device %d; the "
          "gradient sums stay in MPI\n", d->rank, device_id);
  free(s);
  return 1;
}

static void nccl_free(cli_dist *d) {
  nccl_state *s = d->nccl;
  if (!s) return;
  ncclCommDestroy(s->comm);
  cudaStreamDestroy(s->stream);
  free(s);
  d->nccl = NULL;
}
#else
int cli_dist_use_nccl(cli_dist *d, int device_id) {
  (void)device_id;
  if (d->world > 1 && d->rank == 0)
    fprintf(stderr, "scoresde train: note: built without NCCL: the gradients of the GPUs are "
            "summed by MPI on the host\n");
  return 1;
}
static void nccl_free(cli_dist *d) { (void)d; }
#endif

void cli_dist_finish(cli_dist *d) {
  nccl_free(d);
  if (d->mpi) MPI_Finalize();
  d->mpi = 0;
}

#else /* no MPI: a group of one */

int cli_dist_init(cli_dist *d) {
  memset(d, 0, sizeof *d);
  d->world = 1;
  d->reduce.world = 1;
  int n = launcher_world_size();
  if (n > 1) {
    fprintf(stderr, "scoresde train: started by an MPI launcher (%d processes), but this "
            "scoresde was built without MPI; install libopenmpi-dev and rebuild "
            "(docs/scale.md)\n", n);
    return CLI_EXIT_ERROR;
  }
  return 0;
}
int cli_dist_use_nccl(cli_dist *d, int device_id) {
  (void)d;
  (void)device_id;
  return 1;
}
int cli_dist_or(const cli_dist *d, int bits) {
  (void)d;
  return bits;
}
int cli_dist_bcast_int(const cli_dist *d, int v) {
  (void)d;
  return v;
}
int cli_dist_same_u64(const cli_dist *d, uint64_t v) {
  (void)d;
  (void)v;
  return 1;
}
int cli_dist_abort(const cli_dist *d, int code) {
  (void)d;
  return code;
}
void cli_dist_finish(cli_dist *d) { (void)d; }

#endif
