"""Hypothesis strategies: random pytrees, random *valid* hyperparameters of every registry
entry, and random chains of primitives.

Trees are drawn as *specs* (containers with ``Leaf(shape, dtype)`` at the leaves, plus
``None`` and empty containers) and filled with seeded numpy values by ``materialize``:
hypothesis prints a failing example as a readable spec and a seed, and shrinks it.

Hyperparameters start from a grid point of the entry's registry row (a keyword set known
to be valid) and redraw each number within the constraint declared in the factory's
signature (``gradtx/hyperparams.py``), kept in a numerically sane part of it: decays in
[0, 0.99], learning rates in [1e-4, 1e-1], other non-negative numbers within a factor
10 of the grid's value. Flags, callables (schedules, masks) and strings outside a
``OneOf`` stay as the grid has them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import strategies as st

import gradtx
from gradtx import hyperparams
from gradtx.registry import Entry, of_kind

from .conftest import PROFILE

BF16, F16, F32, F64, C64 = jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64, jnp.complex64

# --- which registry entries the generic runs drive ---------------------------------------

# Entries whose ``update`` cannot run on a generic (params, gradients) pair, and why. (The
# rows that say so themselves, ``needs_objective`` or no grid point, are left out too.)
EXCLUDED = {
    "differentially_private_aggregate": "takes per-example gradients (a batch axis first); tests/test_privacy.py",
}
# Entries that orthogonalize matrices: a leaf of rank < 2 is an error by design ("leave
# this leaf to Adam"), so they get trees of matrices only.
MATRIX_ONLY = {"scale_by_muon", "newton_schulz", "scale_by_shape"}
# Entries that refuse complex leaves, and why.
REAL_ONLY = {"clip": "complex numbers have no order to clip by (jnp.clip refuses them, as optax.clip does)"}
# Fork building blocks whose input is a second moment, not a gradient ("the denominator of
# every RMS-style method", "AMSGrad's non-increasing denominator"): they are fed g^2 of
# real trees.
SECOND_MOMENT_INPUT = {"sqrt_eps", "running_max"}
# Fork building blocks whose output is a statistic for the other branch, not a step:
# ``u -> nu`` real-valued for complex updates, or one scalar per leaf (their docstrings).
REAL_STATISTIC = {"second_moment", "belief_moment", "yogi_moment", "asynchronous_belief", "infinity_norm"}
LEAF_STATISTIC = {"layer_second_moment", "lars_trust_ratio"}
# Entries with a centered second moment ``nu - mu^2``: at decay 0 it is 0 in exact
# arithmetic, so the step is rounding noise over eps, which a jitted run (FMA) and an eager
# one round differently (the deep profile found w 20,846 vs 33,050 for scale_by_stddev).
# Their decay is drawn above 0 (``CANCELLING_DECAY``).
CENTERED = {"scale_by_stddev": "decay", "rmsprop": "decay"}
CANCELLING_DECAY = 0.01


def runnable(entry: Entry) -> bool:
    return bool(entry.grid) and not entry.needs_objective and entry.name not in EXCLUDED


TRANSFORMATIONS = [e for e in of_kind("optimizer", "primitive") if runnable(e)]
# The links of random chains: primitives that take gradients and give steps shaped like them.
CHAIN_LINKS = [
    e
    for e in TRANSFORMATIONS
    if e.kind == "primitive" and e.name not in SECOND_MOMENT_INPUT | REAL_STATISTIC | LEAF_STATISTIC
]

# --- trees ----------------------------------------------------------------------------

SHAPES = [(), (3,), (2, 3), (3, 2), (2, 1, 3), (1, 2, 1, 3)]  # 0-d to 4-d: wide, tall, unit axes
DTYPES = [F32, BF16, F16, C64, F64]  # float64 only inside jax.enable_x64(True)
# The leaf kinds of the ci profile: every dtype at two ranks or more (float32 at 0-d to 4-d),
# each with a matrix for the matrix methods. Not the whole product: an eager operation
# compiles once per shape and dtype it meets, and compiling dominates the suite's time, so
# the examples share a few kernels. The deep profile draws from the whole product.
CI_LEAVES = [
    *((s, F32) for s in [(), (3,), (2, 3), (1, 2, 1, 3)]),
    *((s, BF16) for s in [(), (3, 2)]),
    *((s, F16) for s in [(3,), (2, 1, 3)]),
    *((s, C64) for s in [(3,), (2, 3)]),
    *((s, F64) for s in [(), (3, 2)]),
]
LEAF_KINDS = [(s, d) for d in DTYPES for s in SHAPES] if PROFILE == "deep" else CI_LEAVES
MAX_LEAVES = 3 if PROFILE == "deep" else 2  # array leaves per tree (besides None and empty subtrees)
KEYS = ("w", "b", "a", "head")


@dataclasses.dataclass(frozen=True)
class Leaf:
    """An array leaf to be filled by ``materialize``: its shape and dtype."""

    shape: tuple
    dtype: Any

    def __repr__(self) -> str:
        return f"Leaf({self.shape}, {jnp.dtype(self.dtype).name})"


def is_leaf(x: Any) -> bool:
    return isinstance(x, Leaf)


def leaves(spec: Any) -> list[Leaf]:
    return jax.tree.leaves(spec, is_leaf=is_leaf)


def leaf_kinds(*, x64: bool = False, complex_: bool = True, matrices: bool = False) -> list[tuple]:
    """``(shape, dtype)`` of the leaves a tree may have (``LEAF_KINDS``, float32 first: what
    shrinking goes to): float64 only with ``x64``, complex64 only with ``complex_``, only
    matrices and up with ``matrices``."""
    return [
        (s, d)
        for s, d in LEAF_KINDS
        if (x64 or d != F64) and (complex_ or d != C64) and (not matrices or len(s) >= 2)
    ]


def mixed_spec(kinds: list[tuple]) -> dict:
    """A tree with a leaf of every dtype among ``kinds`` (the first kind of each), an empty
    subtree and a ``None``."""
    first: dict = {}
    for shape, dtype in kinds:
        first.setdefault(jnp.dtype(dtype), Leaf(shape, dtype))
    head, *rest = first.values()
    return {"w": head, "rest": (*rest, {}), "none": None}


def tree_specs(kinds: list[tuple], max_leaves: int = MAX_LEAVES) -> st.SearchStrategy:
    """Nested dict / list / tuple trees (sometimes an ``nnx.State`` at the root) with 1 to
    ``max_leaves`` array leaves of the given ``(shape, dtype)`` kinds, plus empty subtrees
    and ``None`` leaves; or, one draw in eight and first (hypothesis'
    simplest example), the ``mixed_spec`` with every dtype, so that every registry entry
    meets every dtype in the ci profile's few examples."""
    leaf = st.sampled_from(kinds).map(lambda kind: Leaf(*kind))
    empty = st.sampled_from([{}, [], (), None])

    def containers(children):
        return st.one_of(
            st.dictionaries(st.sampled_from(KEYS), children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3).map(tuple),
        )

    node = st.recursive(st.one_of(leaf, leaf, empty), containers, max_leaves=max_leaves + 2)
    trees = node.filter(lambda t: 1 <= len(leaves(t)) <= max_leaves)
    states = st.dictionaries(st.sampled_from(KEYS), node, min_size=1, max_size=3).filter(
        lambda t: 1 <= len(leaves(t)) <= max_leaves
    )
    random = st.one_of(trees, trees, states.map(nnx.State))
    mixed = mixed_spec(kinds)
    return st.integers(0, 7).flatmap(lambda i: st.just(mixed) if i == 0 else random)


def materialize(spec: Any, seed: int, *, mean: float = 0.3, scale: float = 1.0) -> Any:
    """The spec's leaves filled with ``scale * (mean + N(0, 1))`` (complex: independent
    real and imaginary parts), as numpy arrays of the leaf's dtype; seeded."""
    rng = np.random.default_rng(seed)

    def fill(leaf: Leaf) -> np.ndarray:
        x = rng.normal(size=leaf.shape)
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            x = x + 1j * rng.normal(size=leaf.shape)
        return np.asarray(scale * (mean + x), dtype=jnp.dtype(leaf.dtype))

    return jax.tree.map(fill, spec, is_leaf=is_leaf)


class Problem(NamedTuple):
    """Params and a few steps of gradients (numpy, on the host), all shaped like ``spec``,
    filled from ``seed`` (the gradients scaled by ``scale``)."""

    spec: Any
    seed: int
    scale: float
    params: Any
    grads: list

    def __repr__(self) -> str:
        return f"Problem(spec={self.spec!r}, seed={self.seed}, scale={self.scale})"


@st.composite
def problems(draw, spec_strategy: st.SearchStrategy, n_steps: int = 2) -> Problem:
    """A tree spec, its params (values around 0.3) and ``n_steps`` gradient trees."""
    spec = draw(spec_strategy)
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1.0, 1e-2]))
    params = materialize(spec, seed)
    grads = [materialize(spec, seed + 1 + i, scale=scale) for i in range(n_steps)]
    return Problem(spec, seed, scale, params, grads)


# --- hyperparameters ------------------------------------------------------------------


@functools.cache
def constraints(factory: Any) -> dict[str, Any]:
    """``argument -> its declared constraint`` (``Interval``, ``OneOf``, ...) of a factory."""
    raw = inspect.unwrap(factory)
    hints = typing.get_type_hints(raw, include_extras=True)
    return {name: hyperparams.constraint_of(hints.get(name))[0] for name in inspect.signature(raw).parameters}


def _log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: float(10.0**e))


def number(name: str, value: Any, constraint: Any) -> st.SearchStrategy:
    """A new value for the numeric argument ``name`` (``value`` at the grid point) within its
    declared ``constraint``, in a sane part of it: an integer (a count, a period) from its
    lower bound to ``value + 2``; a learning rate log-uniform in [1e-4, 1e-1]; a decay or
    factor below 1 in [low, 0.99]; a growth factor above 1 in (1, 2]; an unbounded real
    within a factor 2 of ``value``, its sign kept; any other non-negative number
    log-uniform within a factor 10 of ``value`` (0 or up to 0.1 where ``value`` is 0)."""
    if isinstance(value, int) and getattr(constraint, "high", math.inf) == math.inf:
        return st.integers(max(math.ceil(getattr(constraint, "low", 0)), 0), max(value, 1) + 2)
    if not isinstance(constraint, hyperparams.Interval):
        return st.just(value)
    c, margin = constraint, 0.01  # the margin kept from an open end
    if "learning_rate" in name:
        return _log_uniform(max(c.low, 1e-4), 1e-1)
    if c.high == 1.0:
        return st.floats(c.low + (margin if c.low_open else 0.0), 0.99)
    if c.low >= 1.0:
        return st.floats(c.low + (margin if c.low_open else 0.0), c.low + 1.0)
    if c.low == -math.inf:
        return st.floats(0.5, 2.0).map(lambda f: f * value) if value else st.floats(-1.0, 1.0)
    if value == 0.0:
        return st.one_of(st.just(0.0), _log_uniform(1e-4, 1e-1))
    return _log_uniform(value / 10, value * 10)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Drawn(NamedTuple):
    """A registry entry and valid keyword arguments for it; ``asked``: the state field ->
    dtype that a dtype argument (``mu_dtype``) asked for."""

    entry: Entry
    kwargs: dict
    asked: dict

    def build(self) -> gradtx.Transformation:
        return self.entry.obj(**self.kwargs)

    @property
    def names(self) -> set[str]:
        return {self.entry.name}

    @property
    def update_extra(self) -> dict:
        return self.entry.update_extra

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(v, '__name__', v)!r}" for k, v in self.kwargs.items())
        return f"gradtx.{self.entry.name}({args})"


ASKABLE = [None, BF16, F32]  # values drawn for a dtype argument (None: the params' own)


def _dtype_fields(entry: Entry, kwargs: dict) -> dict[str, tuple[str, ...]]:
    """Dtype argument -> the state fields it sets: the row's ``dtypes``, and for a dtype
    argument the grid sets that the row does not list, the transformation's one
    params-shaped field."""
    out = dict(entry.dtype_fields)
    for name, c in constraints(entry.obj).items():
        if isinstance(c, hyperparams.InexactDtype) and name in kwargs and name not in out:
            like = [k.name for k in entry.obj(**kwargs).stage.fields if k.field.like_params]
            assert len(like) == 1, f"{entry.name}: which field does {name} set? (add it to the row's dtypes)"
            out[name] = (like[0],)
    return out


@st.composite
def hyperparameters(draw, entry: Entry) -> Drawn:
    """Valid keyword arguments for ``entry``: a grid point with each number that has a
    declared constraint redrawn within it (``number``), each ``OneOf`` argument redrawn
    from its values, and each dtype argument drawn from ``ASKABLE``."""
    kwargs = dict(draw(st.sampled_from(entry.grid)))
    declared = constraints(entry.obj)
    for name, value in list(kwargs.items()):
        if isinstance(declared.get(name), hyperparams.OneOf):
            kwargs[name] = draw(st.sampled_from(declared[name].values))
        elif CENTERED.get(entry.name) == name:
            kwargs[name] = draw(st.floats(CANCELLING_DECAY, 0.99))
        elif _is_number(value) and declared.get(name) is not None:
            kwargs[name] = draw(number(name, value, declared[name]))
    asked = {}
    defaults = {n: p.default for n, p in inspect.signature(inspect.unwrap(entry.obj)).parameters.items()}
    for arg, fields in _dtype_fields(entry, kwargs).items():
        dtype = draw(st.sampled_from(ASKABLE))
        kwargs.pop(arg, None)
        if dtype is not None:
            kwargs[arg] = dtype
        if (dtype or defaults[arg]) is not None:  # Adafactor's dtype_momentum is float32 by default
            asked.update(dict.fromkeys(fields, dtype or defaults[arg]))
    return Drawn(entry, kwargs, asked)


def drawn_transformations(entries: list[Entry] = TRANSFORMATIONS) -> st.SearchStrategy[Drawn]:
    """A registry entry (optimizer or primitive) with valid hyperparameters."""
    return st.sampled_from(entries).flatmap(hyperparameters)


# --- chains ---------------------------------------------------------------------------


class DrawnChain(NamedTuple):
    """A chain of drawn primitives; a link whose state field name is taken by an earlier
    link gets it renamed (``gradtx.renamed``, ``mu -> mu_2``)."""

    links: tuple

    def build(self) -> gradtx.Transformation:
        return gradtx.chain(*self.stages())

    def stages(self) -> list[gradtx.Transformation]:
        """The links built, renamed where their fields clash."""
        return self._assemble()[0]

    @property
    def asked(self) -> dict:
        """State field -> the dtype asked for, under the chain's field names."""
        return self._assemble()[1]

    def _assemble(self) -> tuple[list[gradtx.Transformation], dict]:
        taken: set[str] = set()
        stages, asked = [], {}
        for i, link in enumerate(self.links):
            t = link.build()
            names = {k.name: (f"{k.name}_{i}" if k.name in taken else k.name) for k in t.stage.fields}
            clash = {old: new for old, new in names.items() if old != new}
            stages.append(gradtx.renamed(t, **clash) if clash else t)
            taken |= set(names.values())
            asked.update({names[field]: dtype for field, dtype in link.asked.items()})
        return stages, asked

    @property
    def names(self) -> set[str]:
        return {link.entry.name for link in self.links}

    @property
    def update_extra(self) -> dict:
        return {k: v for link in self.links for k, v in link.entry.update_extra.items()}

    def __repr__(self) -> str:
        return f"gradtx.chain({', '.join(map(repr, self.links))})"


def chains(min_size: int = 1, max_size: int = 5) -> st.SearchStrategy[DrawnChain]:
    """Chains of ``min_size`` to ``max_size`` registry primitives (``CHAIN_LINKS``) with
    valid hyperparameters."""
    links = st.lists(drawn_transformations(CHAIN_LINKS), min_size=min_size, max_size=max_size)
    return links.map(lambda links: DrawnChain(tuple(links)))


# --- cases: a transformation and a problem it can run on ---------------------------------


# One example in six runs inside jax.enable_x64(True) (float64 leaves, and Python numbers
# as float64): every kernel compiles anew there, so it is drawn less often.
X64 = st.sampled_from([False] * 5 + [True])


class Case(NamedTuple):
    """A drawn transformation (``Drawn`` or ``DrawnChain``), a problem, and whether it runs
    inside ``jax.enable_x64(True)`` (its trees may then hold float64 leaves)."""

    drawn: Any
    problem: Problem
    x64: bool


@st.composite
def cases(draw, transformations: st.SearchStrategy, x64: st.SearchStrategy[bool] = X64) -> Case:
    """A transformation and a problem within its domain: trees of matrices for
    ``MATRIX_ONLY`` entries, real trees for ``REAL_ONLY`` and ``SECOND_MOMENT_INPUT`` ones."""
    drawn = draw(transformations)
    x64 = draw(x64)
    names = drawn.names
    real = bool(names & (set(REAL_ONLY) | SECOND_MOMENT_INPUT))
    kinds = leaf_kinds(x64=x64, complex_=not real, matrices=bool(names & MATRIX_ONLY))
    specs = tree_specs(kinds)
    return Case(drawn, draw(problems(specs)), x64)


def _real(dtype: Any) -> Any:
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else jnp.dtype(dtype)


def inputs(case: Case) -> list:
    """The gradients the case's transformation is fed: g^2 for the stages that take a
    second moment (``SECOND_MOMENT_INPUT``), the drawn gradients otherwise."""
    if not case.drawn.names & SECOND_MOMENT_INPUT:
        return case.problem.grads
    return [jax.tree.map(np.square, g) for g in case.problem.grads]


def expected_updates(case: Case, grads: Any) -> Any:
    """The shapes and dtypes the updates must have: the gradients', except for the
    statistics of ``REAL_STATISTIC`` (real) and ``LEAF_STATISTIC`` (one real scalar per leaf)."""
    names = case.drawn.names

    def expect(g):
        if names & LEAF_STATISTIC:
            return jax.ShapeDtypeStruct((), _real(g.dtype))
        return jax.ShapeDtypeStruct(g.shape, _real(g.dtype) if names & REAL_STATISTIC else g.dtype)

    return jax.tree.map(expect, grads)
