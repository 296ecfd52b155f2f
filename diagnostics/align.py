"""Permutation alignment of network weights, for symmetry-aware weight-space R-hat.

Relabelling the hidden units of a dense layer (or the channels of a conv layer)
and permuting the next layer's inputs the same way leaves the network function
unchanged, so a posterior over weights has many copies of every mode. Two chains
that sample the same function with differently labelled units have different
weight means and a large raw R-hat. `align_permutations` relabels every draw to
match a reference draw, so that R-hat on aligned weights is large only when
chains sample different basins.

Matching is the weight-matching algorithm of Ainsworth et al. 2022 ("Git
Re-Basin"): for one permutation at a time, with the others held fixed, the
assignment that maximizes the inner product between the reference's weights and
the permuted draw's weights is a linear assignment problem
(`scipy.optimize.linear_sum_assignment`); sweeps over all permutations repeat
until none changes.

Which axes a permutation acts on is described by a *permutation spec*, plain
data so that this module needs nothing from `weightspace.models`:

    {group: [(leaf, axis), (leaf, axis, view), ...], ...}

Every entry of a group is permuted by the same permutation: `leaf` is a dotted
leaf name ("layers.0.kernel", see `weightspace.leaf_names`), `axis` an axis of
one draw of that leaf, or of the draw reshaped to `view` (a shape, -1 allowed)
when the permuted units are not an axis of their own: the rows of a dense layer
that reads a flattened (height, width, channels) map, or one gate block of an
LSTM's fused kernels. All entries of one leaf use the same view. Networks of
`weightspace.models` give theirs with `network.permutation_spec()`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from weightspace.leaf_names import named_leaves

# An assignment must beat the current one by this fraction of its score to
# count as a change, so that round-off cannot make the sweeps cycle.
_IMPROVEMENT = 1e-12


class _Entry(NamedTuple):
    """One permuted axis of one leaf, in the leaf's view."""

    leaf: str
    axis: int
    group: str


def _spec_of(network: Any) -> Mapping:
    """The permutation spec of `network`: a spec itself, an object with
    `permutation_spec()`, or one with a `.network` that has it (a Posterior)."""
    if isinstance(network, Mapping):
        return network
    for candidate in (network, getattr(network, "network", None)):
        method = getattr(candidate, "permutation_spec", None)
        if callable(method):
            return method()
    raise TypeError(
        "network must be a permutation spec {group: [(leaf, axis[, view]), ...]}, a "
        "network with a permutation_spec() method (the networks of "
        f"ws.models), or a Posterior; got network={network!r}")


class ParsedSpec(NamedTuple):
    """groups: entries per group; by_leaf: entries per leaf; views: the shape each
    permuted leaf is viewed as; sizes: units per group."""

    groups: dict[str, list[_Entry]]
    by_leaf: dict[str, list[_Entry]]
    views: dict[str, tuple[int, ...]]
    sizes: dict[str, int]


def _parse_spec(spec: Mapping, leaf_shapes: dict[str, tuple[int, ...]]) -> ParsedSpec:
    """The spec checked against the leaves' shapes (one draw)."""
    groups: dict[str, list[_Entry]] = {}
    views: dict[str, tuple[int, ...]] = {}
    sizes: dict[str, int] = {}
    for group, entries in spec.items():
        if isinstance(entries, (str, bytes)) or not hasattr(entries, "__iter__"):
            raise ValueError(f"permutation spec group {group!r} must be a list of "
                             f"(leaf, axis[, view]) tuples; got {entries!r}")
        groups[group] = []
        for entry in entries:
            if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
                raise ValueError(f"permutation spec entry {entry!r} of group {group!r} "
                                 "must be (leaf, axis) or (leaf, axis, view)")
            leaf, axis = entry[0], entry[1]
            if leaf not in leaf_shapes:
                raise ValueError(
                    f"permutation spec group {group!r} names leaf {leaf!r}, which "
                    f"positions do not have; leaves: {sorted(leaf_shapes)}")
            shape = leaf_shapes[leaf]
            view = shape if len(entry) == 2 or entry[2] is None else tuple(entry[2])
            try:
                view = np.empty(shape, dtype=np.bool_).reshape(view).shape
            except ValueError:
                raise ValueError(f"permutation spec: leaf {leaf!r} of shape {shape} "
                                 f"cannot be viewed as {entry[2]!r}") from None
            if views.setdefault(leaf, view) != view:
                raise ValueError(f"permutation spec: leaf {leaf!r} is viewed both as "
                                 f"{views[leaf]} and as {view}; use one view per leaf")
            if (isinstance(axis, bool) or not isinstance(axis, numbers.Integral)
                    or not -len(view) <= axis < len(view)):
                raise ValueError(f"permutation spec: axis {axis!r} of leaf {leaf!r} "
                                 f"is not an axis of its view {view}")
            axis = int(axis) % len(view)
            if sizes.setdefault(group, view[axis]) != view[axis]:
                raise ValueError(
                    f"permutation spec group {group!r} permutes axes of different "
                    f"sizes ({sizes[group]} and {view[axis]} for leaf {leaf!r})")
            groups[group].append(_Entry(leaf, axis, group))
    by_leaf: dict[str, list[_Entry]] = {}
    for group, entries in groups.items():
        for e in entries:
            clash = [o.group for o in by_leaf.get(e.leaf, []) if o.axis == e.axis]
            if clash:
                raise ValueError(f"permutation spec: axis {e.axis} of leaf {e.leaf!r} "
                                 f"is in groups {clash[0]!r} and {group!r}")
            by_leaf.setdefault(e.leaf, []).append(e)
    return ParsedSpec(groups, by_leaf, views, sizes)


def _permuted(x: np.ndarray, entries: list[_Entry], perms: dict[str, np.ndarray],
              skip: _Entry | None = None) -> np.ndarray:
    """x (a leaf in its view) with every entry's permutation applied, except `skip`."""
    for e in entries:
        if e != skip:
            x = np.take(x, perms[e.group], axis=e.axis)
    return x


def match_permutations(reference: dict[str, np.ndarray], draw: dict[str, np.ndarray],
                       spec: ParsedSpec, *, max_sweeps: int, rng: np.random.Generator,
                       start: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Weight matching of one draw to the reference, both {leaf: array in its view},
    starting from the permutations `start` (default: identities).

    Returns {group: perm} with perm[i] the draw's unit that becomes unit i.
    """
    from scipy.optimize import linear_sum_assignment  # slow to import; only matching needs it

    groups, by_leaf, sizes = spec.groups, spec.by_leaf, spec.sizes
    perms = ({g: np.arange(n) for g, n in sizes.items()} if start is None
             else dict(start))
    order = list(groups)
    for _ in range(max_sweeps):
        changed = False
        for index in rng.permutation(len(order)):
            group = order[index]
            n = sizes[group]
            score = np.zeros((n, n))
            for e in groups[group]:
                a = np.moveaxis(reference[e.leaf], e.axis, 0).reshape(n, -1)
                b = _permuted(draw[e.leaf], by_leaf[e.leaf], perms, skip=e)
                b = np.moveaxis(b, e.axis, 0).reshape(n, -1)
                score += a.astype(np.float64) @ b.astype(np.float64).T
            _, best = linear_sum_assignment(score, maximize=True)
            current = score[np.arange(n), perms[group]].sum()
            gain = score[np.arange(n), best].sum() - current
            if gain > _IMPROVEMENT * max(abs(current), 1.0):
                perms[group] = best
                changed = True
        if not changed:
            break
    return perms


def match_score(reference: dict[str, np.ndarray], draw: dict[str, np.ndarray],
                spec: ParsedSpec, perms: dict[str, np.ndarray]) -> float:
    """Inner product of the reference with the draw relabelled by `perms`, over
    the permuted leaves: the objective weight matching maximizes."""
    return float(sum(np.vdot(reference[leaf].astype(np.float64),
                             _permuted(draw[leaf], entries, perms).astype(np.float64))
                     for leaf, entries in spec.by_leaf.items()))


def _reference_draw(reference, leaves: dict[str, Any], chains: int, draws: int):
    if (isinstance(reference, tuple) and len(reference) == 2
            and all(isinstance(i, numbers.Integral) and not isinstance(i, bool)
                    for i in reference)):
        c, d = reference
        if not (-chains <= c < chains and -draws <= d < draws):
            raise ValueError(f"reference must index a draw of the {chains} chains x "
                             f"{draws} draws; got reference={reference!r}")
        return {name: np.asarray(x[c, d]) for name, x in leaves.items()}
    ref = named_leaves(reference)
    if set(ref) != set(leaves) or any(
            np.shape(ref[k]) != np.shape(leaves[k])[2:] for k in leaves):
        raise ValueError(
            "reference must be (chain, draw) or one draw shaped like positions without "
            "the (chain, draw) axes; got leaves "
            f"{ {k: np.shape(v) for k, v in ref.items()} }")
    return {name: np.asarray(x) for name, x in ref.items()}


def align_permutations(positions: Any, network: Any, *, reference=(0, -1),
                       max_sweeps: int = 100, seed: int = 0,
                       return_permutations: bool = False):
    """Relabel hidden units and channels of every draw to match a reference draw.

    positions: pytree, leaves (chain, draw, ...) (e.g. `trace.positions`).
    network: a network of `ws.models` (or anything with `permutation_spec()`),
        a Posterior, or a permutation spec (see the module docstring).
    reference: (chain, draw) of the draw to match (default: chain 0's last draw),
        or one position without the (chain, draw) axes, e.g. an SGD solution.
    max_sweeps: sweeps over all permutation groups per draw; matching stops
        earlier when a sweep changes nothing.
    seed: order in which groups are visited. Weight matching is a coordinate
        ascent and may stop at a local optimum; every draw after a chain's first
        is matched twice, from the identity and from the previous draw's
        relabelling, and the better match is kept.

    Returns aligned positions: same structure, numpy arrays, every draw computing
    the same function as before. With return_permutations=True also
    {group: (chain, draw, n) int array}, perm[..., i] being the unit of the
    original draw that became unit i.
    """
    if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, numbers.Integral) \
            or max_sweeps < 1:
        raise ValueError(f"max_sweeps must be a positive int; got max_sweeps={max_sweeps!r}")
    leaves = named_leaves(positions)
    if not leaves:
        raise ValueError("positions has no leaves")
    lead = {np.shape(x)[:2] for x in leaves.values()}
    if len(lead) != 1 or any(np.ndim(x) < 2 for x in leaves.values()):
        raise ValueError("positions must be a pytree whose leaves are (chain, draw, ...) "
                         "arrays with the same chain and draw counts; got shapes "
                         f"{ {k: np.shape(v) for k, v in leaves.items()} }")
    chains, draws = lead.pop()
    spec = _parse_spec(_spec_of(network), {k: np.shape(x)[2:] for k, x in leaves.items()})
    ref = _reference_draw(reference, leaves, chains, draws)
    ref = {k: ref[k].reshape(v) for k, v in spec.views.items()}
    rng = np.random.default_rng(seed)

    aligned = {k: np.array(x) for k, x in leaves.items()}
    perms = {g: np.empty((chains, draws, n), np.int64) for g, n in spec.sizes.items()}
    for c in range(chains):
        previous = None
        for d in range(draws):
            draw = {k: aligned[k][c, d].reshape(v) for k, v in spec.views.items()}
            # Coordinate ascent stops at local optima. Successive draws of a chain
            # are close, so the previous draw's relabelling is a second start
            # that usually lands on the global one; the better match is kept.
            found = match_permutations(ref, draw, spec, max_sweeps=max_sweeps, rng=rng)
            if previous is not None:
                warm = match_permutations(ref, draw, spec, max_sweeps=max_sweeps, rng=rng,
                                          start=previous)
                if match_score(ref, draw, spec, warm) > match_score(ref, draw, spec, found):
                    found = warm
            previous = found
            for leaf, entries in spec.by_leaf.items():
                out = _permuted(draw[leaf], entries, found)
                aligned[leaf][c, d] = out.reshape(aligned[leaf].shape[2:])
            for g, p in found.items():
                perms[g][c, d] = p
    treedef = jax.tree.structure(positions)
    result = jax.tree.unflatten(treedef, list(aligned.values()))
    return (result, perms) if return_permutations else result
