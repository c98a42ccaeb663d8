"""The porting check (issue 11): a realistic optax training script for a Flax NNX MLP, run
as written and with ``optax.`` replaced by ``gradtx.``, gives the same parameters after 20
steps (float32, rtol 1e-5). The script uses adamw with a mask function under
inject_hyperparams (and changes a hyperparameter mid-run with ``tree.set``), a warmup
cosine schedule, clip_by_global_norm, partition with labels from a regex on leaf paths,
apply_if_finite, MultiSteps and an EMA of the params."""

import numpy as np

SCRIPT = '''
import re
import jax
import jax.numpy as jnp
import optax
from flax import nnx


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.encoder = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.LayerNorm(16, rngs=rngs)
        self.head = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.norm(self.encoder(x))))


graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)
params = initial = nnx.to_pure_dict(params)


def labels(params):
    path_label = lambda path, _: "frozen" if re.search(r"norm", jax.tree_util.keystr(path)) else "train"
    return jax.tree_util.tree_map_with_path(path_label, params)


schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, warmup_steps=4, decay_steps=20)
adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
    learning_rate=schedule, weight_decay=1e-2, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
parts = optax.partition({"train": adamw, "frozen": optax.set_to_zero()}, labels)
tx = optax.chain(optax.clip_by_global_norm(1.0), parts)
tx = optax.MultiSteps(optax.apply_if_finite(tx, max_consecutive_errors=3), every_k_schedule=2)
ema = optax.ema(0.9)
opt_state, ema_state = tx.init(params), ema.init(params)

x = jax.random.normal(jax.random.key(1), (32, 8))
y = jax.random.randint(jax.random.key(2), (32,), 0, 3)


def loss_fn(params, x, y):
    model = nnx.merge(graphdef, nnx.State(params))
    logits = model(x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


@jax.jit
def train_step(params, opt_state, ema_state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    averaged, ema_state = ema.update(params, ema_state)
    return params, opt_state, ema_state, averaged


for step in range(20):
    if step == 10:
        opt_state = optax.tree.set(opt_state, weight_decay=jnp.asarray(0.1, jnp.float32))
    batch = slice(step % 4 * 8, step % 4 * 8 + 8)
    params, opt_state, ema_state, averaged = train_step(params, opt_state, ema_state, x[batch], y[batch])
'''


def _run(script: str) -> dict:
    scope: dict = {}
    exec(compile(script, "<port>", "exec"), scope)
    return {"params": scope["params"], "averaged": scope["averaged"], "initial": scope["initial"]}


def test_an_optax_script_runs_with_gradtx_in_its_place():
    import jax

    want = _run(SCRIPT)
    got = _run(SCRIPT.replace("optax", "gradtx"))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        where = jax.tree_util.keystr(path)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7, err_msg=where)
    # the script trains: the frozen norm is untouched, every other leaf moved
    for name in ("encoder", "head", "norm"):
        for key, leaf in got["params"][name].items():
            moved = not np.array_equal(np.asarray(leaf), np.asarray(got["initial"][name][key]))
            assert moved == (name != "norm"), (name, key)
