/* CUDA graphs on the CUDA backend (engine-internal; SDE_HAVE_CUDA builds only).
 *
 * Everything issued on a CUDA backend between sde_cuda_graph_begin and sde_cuda_graph_end
 * is recorded instead of run; sde_cuda_graph_launch replays it with one launch, removing
 * the per-kernel launch cost that dominates small batches. While capturing:
 *  - run the work once before capturing it, so the backend's workspaces already have
 *    their size (growing them would wait for the GPU: SDE_EUNSUPPORTED);
 *  - uploads are staged in pinned memory at capture time: the graph replays those values;
 *  - download() and dot_rows() wait for the GPU and fail; synchronize() is a no-op;
 *  - per-row coefficients of axpby_rows are kernel arguments: replayed as captured.
 * A graph belongs to its backend; free it before closing the backend. */
#ifndef SDE_CUDA_GRAPH_H
#define SDE_CUDA_GRAPH_H

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sde_cuda_graph sde_cuda_graph;

int sde_cuda_graph_begin(const sde_backend *be);
int sde_cuda_graph_end(const sde_backend *be, sde_cuda_graph **out);
int sde_cuda_graph_launch(const sde_backend *be, const sde_cuda_graph *g); /* asynchronous */
void sde_cuda_graph_free(const sde_backend *be, sde_cuda_graph *g);

#ifdef __cplusplus
}
#endif
#endif
