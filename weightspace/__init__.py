"""weightspace: Bayesian posteriors over neural-network weights in JAX.

    import weightspace as ws
    ds = ws.data.load("digits")
    post = ws.models.posterior(ws.models.MLP((256, 256), 10), ds, prior_variance=1/5)
"""

from weightspace import data, sharding
from weightspace import models, samplers, diagnostics, slt, experiments

__version__ = "0.1.0"

__all__ = ["data", "sharding", "models", "samplers", "diagnostics", "slt", "experiments"]
