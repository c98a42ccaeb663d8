"""The packed layout: params, gradients and optimizer state in one contiguous buffer per
dtype, with the per-leaf view rebuilt (static slices + reshape) only where it is needed.

Why: a tree of 2,000 small leaves costs 2,000 buffers per array in the step (8,000 for
Adam's params, grads, mu and nu), each handled by the host on every call, and one XLA
fusion per leaf and output. Packed, the same step is a handful of buffers and a handful
of fusions; compiling it does not depend on the number of leaves::

    tree {a: (3, 4) f32, b: (5,) f32, n: () i32}
        │ Packing(tree)                         static: offsets, shapes, dtypes
        ▼
    {"float32": [a0 … a11 | b0 … b4],  "int32": [n]}      (a dict of 1-D arrays)

An element-wise optimizer (``sgd``, ``adam``, ``rmsprop``, ``adagrad``, ``adadelta``, …)
runs on the packed dict as it is, and gives the same numbers as on the tree. Whatever
is per leaf is computed through the layout's static segment ids:

- ``packing.leaf_norms(packed)``: one norm per leaf (a segment sum), as on the tree;
- ``packing.mask(tree_of_bools)`` / ``packing.masked(tx, mask)``: per-leaf masks
  become per-element constants;
- ``packing.scale_by_trust_ratio()``: LAMB's per-leaf ``||p|| / ||u||``.

The packed dict is an ordinary pytree: ``tx.init(packed)``, ``jax.jit`` with donation
and ``gradtx.update_and_apply`` all take it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, UpdateError
from gradtx.layerwise import trust_ratio
from gradtx.numerics import abs_sq, range_safe_dtype
from gradtx.transform import Stage, Transformation, finish, named, primitive, stage_of, view

Packed = dict  # {dtype name: 1-D array}


class LeafSlot(NamedTuple):
    """Where one leaf lives: ``buffers[group][offset:offset + size].reshape(shape)``."""

    path: str
    shape: tuple[int, ...]
    dtype: Any
    group: str
    offset: int
    size: int


class Packing:
    """The static layout of a tree packed into one 1-D buffer per dtype.

    Built from a tree of arrays (or ``jax.ShapeDtypeStruct``); only shapes and dtypes
    are kept, so the object is hashable by identity and safe to close over in a jitted
    function (nothing in it is traced).

    >>> import jax.numpy as jnp, gradtx
    >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    >>> packing = gradtx.Packing(params)
    >>> packed = packing.pack(params)
    >>> packed["float32"].shape
    (9,)
    >>> packing.unpack(packed)["w"].shape
    (2, 3)
    """

    def __init__(self, tree: Any):
        leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
        self.treedef: jax.tree_util.PyTreeDef = treedef  # jaxlib ships no type stubs for it: Any
        offsets: dict[str, int] = {}
        slots = []
        for path, leaf in leaves_with_path:
            dtype = jnp.dtype(leaf.dtype)
            group = dtype.name
            size = int(np.prod(leaf.shape, dtype=np.int64))
            slots.append(
                LeafSlot(
                    jax.tree_util.keystr(path) or "<root>", tuple(leaf.shape), dtype, group, offsets.get(group, 0), size
                )
            )
            offsets[group] = offsets.get(group, 0) + size
        self.slots: tuple[LeafSlot, ...] = tuple(slots)
        self.sizes: dict[str, int] = offsets
        self._segments: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        groups = ", ".join(f"{g}: {n}" for g, n in self.sizes.items())
        return f"Packing({len(self.slots)} leaves; {groups})"

    # --- moving between the tree and the packed buffers -------------------------------

    def pack(self, tree: Any) -> Packed:
        """The tree as ``{dtype: 1-D buffer}`` (a copy: do it once, outside the step)."""
        leaves = self.treedef.flatten_up_to(tree)
        parts: dict[str, list] = {g: [] for g in self.sizes}
        for slot, leaf in zip(self.slots, leaves):
            parts[slot.group].append(jnp.ravel(jnp.asarray(leaf, slot.dtype)))
        return {g: (jnp.concatenate(xs) if len(xs) > 1 else xs[0]) if xs else jnp.zeros(0) for g, xs in parts.items()}

    def unpack(self, packed: Packed) -> Any:
        """The per-leaf view: static slices of the buffers, reshaped (free inside jit)."""
        self._check(packed)
        leaves = [
            jax.lax.slice(packed[s.group], (s.offset,), (s.offset + s.size,)).reshape(s.shape) for s in self.slots
        ]
        return self.treedef.unflatten(leaves)

    def _check(self, packed: Packed) -> None:
        if not isinstance(packed, dict) or set(packed) != set(self.sizes):
            got = sorted(packed) if isinstance(packed, dict) else type(packed).__name__
            raise ValueError(
                f"gradtx.Packing: expected a packed dict with keys {sorted(self.sizes)}, "
                f"got {got}. Build it with packing.pack(tree)."
            )
        for g, n in self.sizes.items():
            if jnp.shape(packed[g]) != (n,):
                raise ValueError(
                    f"gradtx.Packing: buffer {g!r} has shape {jnp.shape(packed[g])}, "
                    f"the layout needs ({n},). Was it packed with a different Packing?"
                )

    # --- per-leaf quantities on the packed buffers ------------------------------------

    def segment_ids(self, group: str) -> np.ndarray:
        """Static int32 leaf index (within ``group``) of every element of the buffer."""
        if group not in self._segments:
            sizes = [s.size for s in self.slots if s.group == group]
            self._segments[group] = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        return self._segments[group]

    def leaf_sums(self, packed: Packed, fn: Callable = lambda x: x) -> Packed:
        """``{group: [sum(fn(leaf)) for leaf in group]}``, one segment sum per buffer."""
        self._check(packed)
        out = {}
        for g, buf in packed.items():
            n = sum(1 for s in self.slots if s.group == g)
            out[g] = jax.ops.segment_sum(fn(buf), self.segment_ids(g), num_segments=n, indices_are_sorted=True)
        return out

    def leaf_norms(self, packed: Packed) -> Packed:
        """``{group: [||leaf||_2 ...]}``: the L2 norm of every leaf, as on the tree."""
        return {g: jnp.sqrt(s) for g, s in self.leaf_sums(packed, abs_sq).items()}

    def per_leaf_tree(self, per_leaf: Packed) -> Any:
        """``{group: values}`` (one value per leaf) back as a tree of scalars."""
        index = dict.fromkeys(self.sizes, 0)
        leaves = []
        for s in self.slots:
            leaves.append(per_leaf[s.group][index[s.group]])
            index[s.group] += 1
        return self.treedef.unflatten(leaves)

    def broadcast(self, per_leaf: Packed) -> Packed:
        """One value per leaf -> that value on every element of the leaf."""
        return {g: jnp.take(v, self.segment_ids(g), indices_are_sorted=True, mode="clip") for g, v in per_leaf.items()}

    def mask(self, mask: Any) -> Packed:
        """A per-leaf mask (a tree of bools shaped like the params, or a function
        ``params -> tree of bools``) as static per-element boolean buffers."""
        if callable(mask):
            mask = mask(self.treedef.unflatten([jax.ShapeDtypeStruct(s.shape, s.dtype) for s in self.slots]))
        flags = self.treedef.flatten_up_to(mask)
        out = {}
        for g in self.sizes:
            sizes = [s.size for s in self.slots if s.group == g]
            keep = [bool(f) for s, f in zip(self.slots, flags) if s.group == g]
            out[g] = np.repeat(np.array(keep, dtype=bool), sizes)
        return out

    # --- transformations that need the layout -----------------------------------------

    def masked(self, inner: GradientTransformation, mask: Any) -> Transformation:
        """``u -> inner(u)`` on the leaves where ``mask`` is True, ``u`` elsewhere.

        The packed counterpart of ``optax.masked`` for element-wise ``inner``: the params
        come out the same as with ``optax.masked`` on the tree (the inner state is also
        advanced on masked-out elements, where it is never used). Its state is ``inner``'s.
        """
        flat_mask = self.mask(mask)
        stage = stage_of(inner)

        def apply(updates, state, step):
            new, fields = stage.apply(updates, view(stage, state), step)
            return {g: jnp.where(flat_mask[g], new[g], u) for g, u in updates.items()}, fields

        return named("Packing.masked", finish(Stage(stage.fields, stage.uses_count, apply)))

    def scale_by_trust_ratio(
        self, min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
    ) -> Transformation:
        """``u -> u * ||p|| / ||u||`` per leaf (1 where either norm is 0): LAMB's trust
        ratio, with optax's ``scale_by_trust_ratio`` arguments and numbers (the formula is
        ``gradtx.layerwise.trust_ratio``, as for ``gradtx.scale_by_trust_ratio`` on the tree)."""

        def apply(updates, state, step):
            params = step.params
            if params is None:
                raise UpdateError("update() needs params (call update(updates, state, params))")
            # in float32 for a float16 buffer, as on the tree (``scale_by_trust_ratio``)
            wide = {g: range_safe_dtype(u.dtype) for g, u in updates.items()}
            p_norm = self.leaf_norms({g: params[g].astype(wide[g]) for g in updates})
            u_norm = self.leaf_norms({g: u.astype(wide[g]) for g, u in updates.items()})
            ratio = {g: trust_ratio(p_norm[g], u_norm[g], min_norm, trust_coefficient, eps) for g in updates}
            scale = self.broadcast(ratio)
            return {g: (u.astype(wide[g]) * scale[g].astype(wide[g])).astype(u.dtype) for g, u in updates.items()}, {}

        return named("Packing.scale_by_trust_ratio", primitive(apply))
