"""``update_and_apply``: one optimizer step (``tx.update`` + ``apply_updates``) that reads
params, gradients and state once and writes params and state once.

Why: XLA on CPU compiles an element-wise optimizer step into one loop fusion per
*output* of each leaf. Adam's three outputs (``mu``, ``nu``, params) give three fusions,
the last one re-reading ``mu`` and ``nu`` from memory: 10 passes over memory where 7
suffice. ``update_and_apply`` runs the step on cache-sized chunks of every large leaf
inside a ``fori_loop``::

    for each large leaf, for each chunk [o, o + C):
        p_c, g_c, s_c  = slices at o                      (read once from memory)
        out = stack(p_c + u_c, s'_c ...)                  (one fusion, chunk in cache)
        p, s = dynamic_update_slice(p, out[0], o), ...    (in place, donated buffers)

so the re-reads hit the cache. The ``optimization_barrier`` on the stacked chunk stops
XLA from fusing the recomputation back into the in-place writes (which would force a
copy of the whole state buffer). Small leaves and the ragged tails of large leaves go
through one ordinary ``tx.update`` call.

Only *element-wise* transformations can be chunked: each output element must depend
only on the same element of the inputs and on scalar state (step counts, schedules).
That is checked on the traced update, not assumed; ``clip_by_global_norm``, per-leaf
norms and anything else that reduces over a leaf are refused with ``NotElementwiseError``
(run those with a plain ``tx.update``, or on the packed layout, see ``gradtx.packing``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, DropVar, Literal, Var

from gradtx.base import GradientTransformation

try:  # the dead-code elimination that splits the traced update by leaf
    from jax._src.interpreters.partial_eval import dce_jaxpr as _dce_jaxpr
except ImportError:  # pragma: no cover - a future jax moved it
    _dce_jaxpr = None


class NotElementwiseError(ValueError):
    """The transformation cannot be chunked: an output element depends on other elements."""


# Primitives that act element by element (with scalars broadcast) and keep shapes.
_ELEMENTWISE = frozenset("""
abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp complex conj convert_element_type
copy copy_p cos cosh div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow is_finite le
lgamma digamma log log1p logistic lt max min mul ne neg nextafter not or pow real reduce_precision rem
round rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh xor
""".split())
# Primitives that wrap a sub-jaxpr; their body is checked instead.
_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
          "custom_vjp_call_jaxpr": "fun_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr"}
_TAG = 1_000_003  # leaf k of the tagged params has shape (_TAG + k,): finds state leaves


def _check_elementwise(jaxpr, chunk: int, where: str) -> None:
    """Raise unless every equation touching a chunk-shaped value is element-wise."""
    for eqn in jaxpr.eqns:
        big = [v for v in eqn.invars if getattr(getattr(v, "aval", None), "shape", ()) == (chunk,)]
        name = eqn.primitive.name
        if name in _CALLS and _CALLS[name] in eqn.params:
            sub = eqn.params[_CALLS[name]]
            _check_elementwise(getattr(sub, "jaxpr", sub), chunk, where)
            continue
        if not big:
            if any(getattr(v.aval, "shape", ()) == (chunk,) for v in eqn.outvars) and name != "broadcast_in_dim":
                raise NotElementwiseError(f"{where}: `{name}` creates a per-element value")
            continue
        if name not in _ELEMENTWISE:
            raise NotElementwiseError(
                f"{where}: the update is not element-wise (it applies `{name}` to a whole "
                f"leaf), so it cannot be chunked. Use a plain jitted tx.update + "
                f"apply_updates for this transformation, or the packed layout "
                f"(gradtx.Packing) for per-leaf quantities.")


def update_and_apply(tx: GradientTransformation, *, chunk_size: int = 8192,
                     min_chunked_size: int | None = None) -> Callable:
    """``(params, state, grads, **extra) -> (new_params, new_state)``: ``tx.update`` and
    ``apply_updates`` in one pass over memory, for element-wise ``tx``.

    Gives the same numbers as ``u, s = tx.update(grads, state, params);
    apply_updates(params, u)``. Jit it with the params and state donated::

        step = jax.jit(gradtx.update_and_apply(gradtx.adam(1e-3)), donate_argnums=(0, 1))
        params, state = step(params, state, grads)

    Args:
      tx: an element-wise transformation (checked when traced; ``NotElementwiseError``
        otherwise). Its per-element state must be shaped like the params, other state
        scalar.
      chunk_size: elements per chunk; all arrays of one chunk should fit in L2 cache.
      min_chunked_size: leaves smaller than this go through one plain update (default
        ``4 * chunk_size``).
    """
    if chunk_size < 1:
        raise ValueError(f"gradtx.update_and_apply(chunk_size={chunk_size!r}): chunk_size must be >= 1")
    min_size = 4 * chunk_size if min_chunked_size is None else min_chunked_size
    C = chunk_size

    def step(params, state, grads, **extra):
        p_leaves, p_def = jax.tree.flatten(params)
        g_leaves = p_def.flatten_up_to(grads)
        s_leaves, s_def = jax.tree.flatten(state)
        # Which state leaf belongs to which param leaf: trace init on tagged shapes.
        tagged = [jax.ShapeDtypeStruct((_TAG + k,), x.dtype) for k, x in enumerate(p_leaves)]
        s_shapes = jax.tree.leaves(jax.eval_shape(tx.init, p_def.unflatten(tagged)))
        if len(s_shapes) != len(s_leaves):
            raise ValueError("gradtx.update_and_apply: the state does not come from tx.init(params)")
        owner: list[int | None] = []
        for sh, s in zip(s_shapes, s_leaves):
            if len(sh.shape) == 1 and sh.shape[0] >= _TAG and sh.shape[0] - _TAG < len(p_leaves):
                owner.append(sh.shape[0] - _TAG)
            elif sh.shape == ():
                owner.append(None)
            else:
                raise NotElementwiseError(
                    f"gradtx.update_and_apply: a state leaf of shape {sh.shape} is neither "
                    f"shaped like a param nor a scalar; this transformation cannot be chunked.")
        large = [k for k, p in enumerate(p_leaves) if p.size >= max(min_size, C)]

        def flat_update(g_in, s_in, p_in):
            u, s = tx.update(p_def.unflatten(g_in), s_def.unflatten(s_in), p_def.unflatten(p_in), **extra)
            return p_def.flatten_up_to(u), jax.tree.leaves(s)

        p_flat = [p.reshape(-1) for p in p_leaves]
        g_flat = [g.reshape(-1) for g in g_leaves]
        s_flat = [s.reshape(-1) if o is not None else s for s, o in zip(s_leaves, owner)]

        if large:
            # Trace the update once with every leaf a chunk, then cut it per leaf.
            chunk_of = lambda x: jax.ShapeDtypeStruct((C,), x.dtype)  # noqa: E731
            s_avals = [chunk_of(s) if o is not None else jax.ShapeDtypeStruct(s.shape, s.dtype)
                       for s, o in zip(s_flat, owner)]
            try:
                closed = jax.make_jaxpr(flat_update)([chunk_of(g) for g in g_flat], s_avals,
                                                     [chunk_of(p) for p in p_flat])
            except (ValueError, TypeError) as e:
                jax.eval_shape(flat_update, g_leaves, s_leaves, p_leaves)  # a real error raises here
                raise NotElementwiseError(
                    f"gradtx.update_and_apply: the update depends on the leaf shapes, so it "
                    f"cannot run on chunks ({type(e).__name__}: {e})") from e
            n = len(p_leaves)
            n_in = len(closed.jaxpr.invars)
            in_kind = [("g", k) for k in range(n)] + [("s", i) for i in range(len(s_flat))] + \
                      [("p", k) for k in range(n)]
            assert len(in_kind) == n_in
            u_out = list(range(n))
            s_out = {k: [n + i for i, o in enumerate(owner) if o == k] for k in large}
            s_idx = {k: [i for i, o in enumerate(owner) if o == k] for k in large}
            for k in large:
                used = [False] * len(closed.jaxpr.outvars)
                for j in [u_out[k]] + s_out[k]:
                    used[j] = True
                sub, used_in = _dce_jaxpr(closed.jaxpr, used)
                _check_elementwise(sub, C, "gradtx.update_and_apply")
                for flag, (kind, i) in zip(used_in, in_kind):
                    if flag and ((kind in "gp" and i != k) or (kind == "s" and owner[i] not in (None, k))):
                        raise NotElementwiseError(
                            "gradtx.update_and_apply: the update of one leaf reads another leaf "
                            "(a cross-leaf reduction such as a global norm); it cannot be chunked.")
                ins_of = [(kind, i) for flag, (kind, i) in zip(used_in, in_kind) if flag]
                p_flat[k], new_s = _chunk_loop(ClosedJaxpr(sub, closed.consts), ins_of, k, p_flat[k], g_flat[k],
                                               {i: s_flat[i] for i in s_idx[k]}, s_flat, C)
                for i in s_idx[k]:
                    s_flat[i] = new_s[i]

        # Small leaves whole, the ragged tails of large leaves, and all scalar state.
        tail_start = {k: (p_flat[k].size // C) * C for k in large}
        # Small leaves keep their shape here (so XLA compiles them as in the plain step).
        rest = lambda x, k, orig: x[tail_start[k]:] if k in tail_start else orig  # noqa: E731
        r_g = [rest(g, k, g0) for k, (g, g0) in enumerate(zip(g_flat, g_leaves))]
        r_p = [rest(p, k, p0) for k, (p, p0) in enumerate(zip(p_flat, p_leaves))]
        r_s = [rest(s, o, s0) if o is not None else s for s, s0, o in zip(s_flat, s_leaves, owner)]
        # As in the loop: write the new state first, then compute the params update from
        # the stored state (re-read after a barrier), so that no buffer is copied.
        avals = lambda xs: [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in xs]  # noqa: E731
        closed_r = jax.make_jaxpr(flat_update)(avals(r_g), avals(r_s), avals(r_p))
        args = [*r_g, *r_s, *r_p]
        outs = _eval(closed_r.jaxpr, closed_r.consts, args)
        n = len(p_leaves)
        new_s = []
        for i, (x, o) in enumerate(zip(outs[n:], owner)):
            x = x.astype(s_flat[i].dtype)
            new_s.append(_put_tail(s_flat[i], x, tail_start[o]) if o in tail_start else x)
        elementwise = [i for i, o in enumerate(owner) if o is not None]
        jr = closed_r.jaxpr
        out_vars = [jr.outvars[n + i] for i in elementwise]
        state_in = {jr.invars[n + i] for i in elementwise}
        if all(isinstance(v, Var) and v.aval.dtype == new_s[i].dtype for v, i in zip(out_vars, elementwise)) \
                and not any(_needs(jr, k, set(out_vars)) & state_in for k in range(n)):
            stored = jax.lax.optimization_barrier([new_s[i] for i in elementwise])
            seeds = {}
            for i, x, var in zip(elementwise, stored, out_vars):
                new_s[i] = x
                seeds[var] = x[tail_start[owner[i]]:] if owner[i] in tail_start else x
            u_r = _eval(jr, closed_r.consts, args, seeds)[:n]
        else:
            u_r = outs[:n]
        new_p = []
        for k, (p, u) in enumerate(zip(r_p, u_r)):
            val = jnp.asarray(p + u).astype(p.dtype)
            new_p.append(_put_tail(p_flat[k], val, tail_start[k]) if k in tail_start else val)
        new_p = [x.reshape(p.shape) for x, p in zip(new_p, p_leaves)]
        new_s = [x.reshape(s.shape) for x, s in zip(new_s, s_leaves)]
        return p_def.unflatten(new_p), s_def.unflatten(new_s)

    return step


def _put_tail(buf, tail, start):
    if tail.size == 0:
        return buf
    return jax.lax.dynamic_update_slice(buf, tail, (start,))


def _needs(jaxpr, out_index: int, given) -> set:
    """The input variables that ``jaxpr.outvars[out_index]`` still depends on when the
    variables in ``given`` are supplied."""
    producer = {v: eqn for eqn in jaxpr.eqns for v in eqn.outvars}
    needed, stack, seen = set(), [jaxpr.outvars[out_index]], set()
    while stack:
        v = stack.pop()
        if isinstance(v, Literal) or v in seen or v in given:
            continue
        seen.add(v)
        if v in producer:
            stack.extend(producer[v].invars)
        else:
            needed.add(v)
    return needed


def _eval(jaxpr, consts, args, seeds=None):
    """``jax.core.eval_jaxpr`` that takes some intermediate values as given (``seeds``)
    and skips the equations that would compute them."""
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    env.update(seeds or {})
    read = lambda v: v.val if isinstance(v, Literal) else env[v]  # noqa: E731
    for eqn in jaxpr.eqns:
        outs = [v for v in eqn.outvars if not isinstance(v, DropVar)]
        if outs and all(v in env for v in outs):
            continue
        with eqn.ctx.manager:
            ans = eqn.primitive.bind(*map(read, eqn.invars), **eqn.primitive.get_bind_params(eqn.params))
        if eqn.primitive.multiple_results:
            env.update(zip(eqn.outvars, ans))
        else:
            env[eqn.outvars[0]] = ans
    return [read(v) for v in jaxpr.outvars]


def _chunk_loop(closed, ins_of, k, p, g, s_own: dict, s_all: list, C: int):
    """Run ``closed`` (leaf ``k``'s slice of the update: outputs the update, then the
    new state chunks) over the whole chunks of leaf ``k``, writing params and state in place.

    Per chunk: the new state chunks are written in place first; an optimization barrier
    on the state buffers then makes the params update *re-read* them (from cache) instead
    of recomputing them from the old, already overwritten state, which would force XLA
    to copy the whole state buffer. Where a stored state chunk differs from the value the
    update uses (a dtype cast), all outputs are stacked into one materialized chunk instead.
    """
    jaxpr, consts = closed.jaxpr, closed.consts
    n_chunks = p.size // C
    s_keys = sorted(s_own)
    s_vars = jaxpr.outvars[1:]
    reread_ok = all(isinstance(v, Var) and v.aval.dtype == s_own[i].dtype for v, i in zip(s_vars, s_keys))
    if reread_ok:  # the update must not need the old state once the new one is given
        state_in = {jaxpr.invars[pos] for pos, (kind, i) in enumerate(ins_of) if kind == "s" and i in s_own}
        reread_ok = not (_needs(jaxpr, 0, set(s_vars)) & state_in)

    def body(j, carry):
        p_buf, s_bufs = carry
        o = j * C
        sl = lambda x: jax.lax.dynamic_slice(x, (o,), (C,))  # noqa: E731
        dus = lambda buf, x: jax.lax.dynamic_update_slice(buf, x, (o,))  # noqa: E731
        args = []
        for kind, i in ins_of:
            if kind == "g":
                args.append(sl(g))
            elif kind == "p":
                args.append(sl(p_buf))
            elif i in s_bufs:
                args.append(sl(s_bufs[i]))
            else:
                args.append(s_all[i])  # scalar state: the same value for every chunk
        outs = _eval(jaxpr, consts, args)
        if reread_ok:
            s_bufs = {i: dus(s_bufs[i], x) for x, i in zip(outs[1:], s_keys)}
            s_bufs = jax.lax.optimization_barrier(s_bufs)
            u = _eval(jaxpr, consts, args, {v: sl(s_bufs[i]) for v, i in zip(s_vars, s_keys)})[0]
            p_c = sl(p_buf)
            return dus(p_buf, jnp.asarray(p_c + u).astype(p_buf.dtype)), s_bufs
        p_c = sl(p_buf)
        rows = [jnp.asarray(p_c + outs[0]).astype(p_buf.dtype)] + \
               [x.astype(s_bufs[i].dtype) for x, i in zip(outs[1:], s_keys)]
        groups: dict = {}
        for r, row in enumerate(rows):
            groups.setdefault(row.dtype, []).append(r)
        stacked = {dt: jnp.stack([rows[r] for r in rs]) for dt, rs in groups.items()}
        stacked = jax.lax.optimization_barrier(stacked)
        pick = {r: stacked[dt][pos] for dt, rs in groups.items() for pos, r in enumerate(rs)}
        p_buf = dus(p_buf, pick[0])
        s_bufs = {i: dus(s_bufs[i], pick[1 + pos]) for pos, i in enumerate(s_keys)}
        return p_buf, s_bufs

    p, s_own = jax.lax.fori_loop(0, n_chunks, body, (p, dict(s_own)))
    return p, s_own
