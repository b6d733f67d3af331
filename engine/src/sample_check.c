/* The ranges of the sampler parameters, in one place: the samplers check their input with
 * it, and the front ends (the CLI, the elements) check their settings with it before any
 * work, so a value is refused by the same rule, with the same message, everywhere. */
#include <math.h>

#include "scoresde/error.h"
#include "scoresde/sample.h"

/* steps: pc's grid points (with the exact kernel of the marginal one step works), the
 * ODE's fixed steps or the few-step solvers' network evaluations, all from one. */
static int check_steps(const sde_sample_params *p) {
  if (p->steps < 0 || p->steps > SDE_MAX_STEPS)
    return sde_fail(SDE_EINVAL, "steps = %d must be in [0, %d] (0 = the sampler's default)",
                    p->steps, SDE_MAX_STEPS);
  return SDE_OK;
}

int sde_sample_params_check(const sde_sample_params *p, const sde_sde *sde) {
  if (!p) return sde_fail(SDE_EINVAL, "no sampler parameters");
  if ((unsigned)p->sampler >= SDE_SAMPLER_COUNT)
    return sde_fail(SDE_EINVAL, "unknown sampler %d", (int)p->sampler);
  int rc = check_steps(p);
  if (rc) return rc;
  if (!(p->eps >= 0.0 && p->eps < SDE_T))
    return sde_fail(SDE_EINVAL, "eps = %g must be in [0, %g) (0 = the default)", p->eps, SDE_T);
  if ((unsigned)p->predictor > SDE_PRED_ANCESTRAL || (unsigned)p->corrector > SDE_CORR_ALD)
    return sde_fail(SDE_EINVAL, "unknown predictor %d or corrector %d", (int)p->predictor,
                    (int)p->corrector);
  if (!(p->snr >= 0.0 && isfinite(p->snr)))
    return sde_fail(SDE_EINVAL, "snr = %g must be finite and >= 0", p->snr);
  if (p->corrector_steps < 0 || p->corrector_steps > SDE_MAX_CORRECTOR_STEPS)
    return sde_fail(SDE_EINVAL, "corrector steps = %d must be in [0, %d]", p->corrector_steps,
                    SDE_MAX_CORRECTOR_STEPS);
  if ((unsigned)p->ode_method > SDE_ODE_HEUN)
    return sde_fail(SDE_EINVAL, "unknown ODE method %d", (int)p->ode_method);
  if (!(p->rtol > 0.0 && isfinite(p->rtol)) || !(p->atol > 0.0 && isfinite(p->atol)))
    return sde_fail(SDE_EINVAL, "rtol (%g) and atol (%g) must be finite and > 0", p->rtol,
                    p->atol);
  if (p->max_evals < 0)
    return sde_fail(SDE_EINVAL, "max-evals = %lld must be >= 0 (0 = the default, %d)",
                    (long long)p->max_evals, SDE_ODE_DEFAULT_MAX_EVALS);
  return SDE_OK;
}
