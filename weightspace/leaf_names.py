"""Dotted names of pytree leaves: "layers.0.kernel".

One naming scheme for every place a leaf is shown or addressed by name: run
directories, ArviZ variables, plots and permutation specs. Dict keys, sequence
indices and attribute names are joined with "." ("/" separates groups in ArviZ
1.x DataTrees), so the params of `post.init()` (int keys) and of a loaded run
(str keys) give the same names.
"""

from __future__ import annotations

from typing import Any

import jax


def leaf_name(path) -> str:
    """'layers.0.kernel' for the key path of a leaf ('position' for a bare array)."""
    parts = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return ".".join(parts) or "position"


def named_leaves(tree: Any) -> dict[str, Any]:
    """{dotted name: leaf} in tree-flattening order."""
    return {leaf_name(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
