"""Basins of a network's posterior, found from its draws.

A known target labels its draws by construction; a network does not. Here
the labels come from the draws themselves:

1. Hidden units are relabelled to match one reference draw
   (`align_permutations`), so that draws computing the same function with
   permuted units sit together (skipped without a network).
2. The aligned draws, flattened, are clustered by k-means (scipy's
   `kmeans2`, k-means++ starts) into at most `max_clusters` clusters; each
   cluster is represented by its draw nearest the centroid (a real draw, so
   its log density means something).
3. For every pair of representatives, the log density is evaluated along the
   straight path between them; the pair's loss barrier is the drop below the
   lower endpoint, min(log p(a), log p(b)) - min_t log p((1 - t) a + t b).
   Clusters joined by a barrier of at most `max_barrier` are one basin (the
   connected components of that graph): a basin split by k-means into pieces
   is merged back, while two minima with a ridge between them stay apart.
4. A draw's basin is that of its nearest representative (after alignment).

The straight path is a test, not a proof: two clusters of one curved basin
may show a barrier on the straight line (they are then reported apart), and
nearest-representative assignment follows Voronoi cells, not the ridges.
On `ws.slt.network_basin_target`, whose basins are known by construction,
the tests check that every basin found lies within one constructed basin.

    assign = ws.diagnostics.assign_basins(trace, posterior.logdensity,
                                          network=posterior.network)
    ws.diagnostics.basins(trace, assign=assign, names=assign.names)
    assign(other_trace.positions)   # labels for other draws (e.g. an ensemble)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from weightspace.checks import int_at_least, nonnegative_float, positive_int
from weightspace.diagnostics.align import align_permutations

MAX_CLUSTERS = 16
MAX_BARRIER = 1.0   # in units of the log density
PATH_POINTS = 25
MAX_FIT_DRAWS = 4000


@dataclasses.dataclass(frozen=True)
class BasinAssignment:
    """Basins found from draws (module docstring); call it on positions with
    leading (chain, draw) axes (or one leading axis) to get their labels.

    names: basin names ("basin 0", ... by decreasing share in the fitted draws).
    representatives: (clusters, weights) flattened aligned representatives.
    cluster_basin: (clusters,) the basin of each cluster.
    barriers: (clusters, clusters) loss barrier between representatives.
    log_density: (clusters,) log density at each representative.
    """

    names: tuple
    representatives: np.ndarray
    cluster_basin: np.ndarray
    barriers: np.ndarray
    log_density: np.ndarray
    max_barrier: float
    reference: Any
    network: Any
    treedef: Any
    shapes: tuple

    def __call__(self, positions) -> np.ndarray:
        positions = getattr(positions, "positions", positions)
        x, lead = _flatten(positions, self.network, self.reference, self.treedef,
                           self.shapes)
        distance = ((x[:, None, :] - self.representatives[None]) ** 2).sum(-1)
        return self.cluster_basin[distance.argmin(axis=1)].reshape(lead)

    def representative(self, cluster: int):
        """The representative draw of k-means cluster `cluster` as a position
        (aligned to the reference draw); its basin is cluster_basin[cluster]."""
        return _unflatten(self.representatives[cluster], self.treedef, self.shapes)


def assign_basins(trace_or_positions, logdensity: Callable, *, network=None,
                  max_clusters: int = MAX_CLUSTERS, max_barrier: float = MAX_BARRIER,
                  path_points: int = PATH_POINTS, seed: int = 0) -> BasinAssignment:
    """Find the basins of the draws (module docstring).

    trace_or_positions: a Trace, or positions with leading (chain, draw) axes
        (pool several runs' draws to compare their shares on the same basins).
    logdensity: position (one draw) -> log density, e.g. a Posterior's.
    network: a network of `ws.models` (or a permutation spec) to align hidden
        units first; None: the weights are used as they are.
    max_clusters: k-means clusters (at most; empty ones are dropped).
    max_barrier: clusters joined by a barrier at most this are one basin.
    path_points: points on each straight path, ends included.
    """
    max_clusters = positive_int("max_clusters", max_clusters)
    max_barrier = nonnegative_float("max_barrier", max_barrier)
    path_points = int_at_least("path_points", path_points, 3)
    if not callable(logdensity):
        raise TypeError(f"logdensity must be callable; got {type(logdensity).__name__}")
    from scipy.cluster.vq import kmeans2

    positions = getattr(trace_or_positions, "positions", trace_or_positions)
    treedef = jax.tree.structure(positions)
    leaves = jax.tree.leaves(positions)
    if not leaves or any(np.ndim(a) < 2 for a in leaves):
        raise ValueError("positions must be a pytree whose leaves are (chain, draw, ...)")
    shapes = tuple(tuple(np.shape(a)[2:]) for a in leaves)
    # Align to chain 0's first draw (one position, without the leading axes).
    reference = None if network is None else jax.tree.map(lambda a: np.asarray(a)[0, 0],
                                                          positions)
    x, _ = _flatten(positions, network, reference, treedef, shapes)
    fit = x[np.linspace(0, len(x) - 1, min(len(x), MAX_FIT_DRAWS)).astype(int)]
    # No more clusters than distinct draws (rejected moves repeat a draw).
    k = min(max_clusters, len(np.unique(fit, axis=0)))
    centroids, owner = kmeans2(fit, k, minit="++", seed=seed)
    used = np.unique(owner)
    reps = np.stack([fit[owner == c][((fit[owner == c] - centroids[c]) ** 2).sum(-1).argmin()]
                     for c in used])
    unflatten = lambda v: _unflatten(v, treedef, shapes)
    dtype = leaves[0].dtype if hasattr(leaves[0], "dtype") else np.float32
    batched = jax.jit(jax.vmap(lambda v: logdensity(unflatten(v))))
    log_density = np.asarray(batched(jnp.asarray(reps, dtype)), np.float64)
    t = np.linspace(0.0, 1.0, path_points)[:, None]
    m = len(reps)
    barriers = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            path = (1.0 - t) * reps[i] + t * reps[j]
            along = np.asarray(batched(jnp.asarray(path, dtype)), np.float64)
            drop = min(log_density[i], log_density[j]) - np.min(along)
            barriers[i, j] = barriers[j, i] = max(float(drop), 0.0)
    from scipy.sparse.csgraph import connected_components

    component = connected_components(barriers <= max_barrier, directed=False)[1]
    cluster_of_fit = np.searchsorted(used, owner)
    sizes = np.bincount(component[cluster_of_fit], minlength=component.max() + 1)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    basin = rank[component]
    names = tuple(f"basin {i}" for i in range(len(order)))
    return BasinAssignment(names, reps, basin, barriers, log_density, max_barrier,
                           reference, network, treedef, shapes)


def _unflatten(v: np.ndarray, treedef, shapes):
    parts, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(v[start:start + size].reshape(shape))
        start += size
    return jax.tree.unflatten(treedef, parts)


def _flatten(positions, network, reference, treedef, shapes) -> tuple[np.ndarray, tuple]:
    """(draws, weights) float64 of positions with leading axes before the
    per-draw `shapes`, aligned to `reference` when a network is given; and the
    leading shape."""
    if jax.tree.structure(positions) != treedef:
        raise ValueError(f"positions must have the structure of the draws the basins were "
                         f"found from ({treedef})")
    leaves = jax.tree.leaves(positions)
    first = np.shape(leaves[0])
    lead = first[:len(first) - len(shapes[0])]
    if any(np.shape(a) != (*lead, *shape) for a, shape in zip(leaves, shapes)):
        raise ValueError(f"positions' leaves must be (..., *draw shape) with draw shapes "
                         f"{shapes}; got {[np.shape(a) for a in leaves]}")
    if network is not None:
        two = jax.tree.map(lambda a: np.asarray(a).reshape(1, -1, *np.shape(a)[len(lead):]),
                           positions)
        leaves = jax.tree.leaves(align_permutations(two, network, reference=reference))
    count = int(np.prod(lead))
    return (np.concatenate([np.asarray(a, np.float64).reshape(count, -1) for a in leaves],
                           axis=1), tuple(lead))
