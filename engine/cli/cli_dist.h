/* Data-parallel `scoresde train` (docs/scale.md): the process group and the sums that
 * libscoresde's sde_train_reduce asks for. Built with MPI (meson found OpenMPI or
 * another MPI: SDE_HAVE_MPI), a process started by mpirun is one rank of MPI_COMM_WORLD
 * and the gradient is summed with MPI_Allreduce, or, on GPUs and built with NCCL
 * (SDE_HAVE_NCCL), with ncclAllReduce on the device (the NCCL communicator bootstrapped
 * over MPI). Without a launcher, or without MPI, the group has one process. libscoresde
 * itself never sees MPI. */
#ifndef SCORESDE_CLI_DIST_H
#define SCORESDE_CLI_DIST_H

#include <stdint.h>

#include "scoresde/train.h"

typedef struct {
  int rank, world;
  int local_rank;      /* rank among the processes on this host (picks the GPU) */
  int mpi;             /* MPI_Init ran here: cli_dist_finish must finalize */
  void *nccl;          /* the NCCL communicator state when the gradient sums run there */
  sde_train_reduce reduce;
  /* time and payload of the gradient sums so far (for the closing report) */
  double sum_seconds;
  int64_t sum_calls;
  double sum_bytes;
} cli_dist;

/* Joins the group when a launcher started this process (mpirun and friends set
 * OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK); a build without MPI refuses such a
 * start with an explanation instead of running P copies of one job. Returns 0, or
 * CLI_EXIT_ERROR after a message on stderr. */
int cli_dist_init(cli_dist *d);
/* Moves the gradient sums into NCCL on CUDA device `device_id` (the trainer runs there);
 * 0, or CLI_EXIT_ERROR after a message (a build without NCCL: MPI sums stay in use and
 * this returns 1 with a note). */
int cli_dist_use_nccl(cli_dist *d, int device_id);
/* The bitwise OR of `bits` over the ranks (collective: every rank must call it). */
int cli_dist_or(const cli_dist *d, int bits);
/* Rank 0's value of v on every rank (collective). */
int cli_dist_bcast_int(const cli_dist *d, int v);
/* 1 when every rank passed the same v (collective). */
int cli_dist_same_u64(const cli_dist *d, uint64_t v);
/* Ends every rank of the group with `code` (MPI_Abort); returns code with one process. */
int cli_dist_abort(const cli_dist *d, int code);
/* Leaves the group (MPI_Finalize when MPI_Init ran here). */
void cli_dist_finish(cli_dist *d);
/* "mpi", "nccl" or "none": how the gradients are summed. */
const char *cli_dist_transport(const cli_dist *d);

#endif
