"""The two networks, in Flax NNX.

``MLP``: 784-200-10 with ReLU, the network of the optimizer-comparison tutorials.
``CNN``: Flax's own MNIST example (3x3 conv 32 -> avg-pool -> 3x3 conv 64 -> avg-pool ->
dense 256 -> 10), with ``nnx.Conv`` computing its convolutions by ``shifted_matmul_conv``.
Both return logits for images of shape ``(N, 28, 28, 1)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class MLP(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, hidden: int = 200):
        self.hidden = nnx.Linear(28 * 28, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        return self.out(nnx.relu(self.hidden(x)))


def shifted_matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                        dimension_numbers=None, feature_group_count=1, precision=None, **unused):
    """``lax.conv_general_dilated`` for what the CNN uses (NHWC x HWIO, stride 1, 'SAME'),
    as one matmul over the kh * kw shifted copies of the padded input (im2col).

    Equal to ``lax.conv_general_dilated`` up to float rounding. Why: on XLA:CPU the kernel
    gradient of a convolution inside a while loop (the ``lax.scan`` over an epoch) falls to
    a naive emitter and runs ~100x slower than outside one (jax-ml/jax#12868); a matmul
    does not.
    """
    del dimension_numbers, unused  # nnx.Conv passes NHWC x HWIO for 4-D inputs
    def ones(d):
        return d is None or all(v == 1 for v in d)

    if not (ones(window_strides) and ones(lhs_dilation) and ones(rhs_dilation)
            and padding == "SAME" and feature_group_count == 1 and lhs.ndim == 4):
        raise ValueError("shifted_matmul_conv: supports 2-D convolutions with stride 1, no dilation, "
                         "'SAME' padding and one feature group (what the CNN uses); got another setting")
    kh, kw, cin, cout = rhs.shape
    _, h, w, _ = lhs.shape
    x = jnp.pad(lhs, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    patches = jnp.concatenate([x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
    return jnp.matmul(patches, rhs.reshape(kh * kw * cin, cout), precision=precision)


class CNN(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        conv = dict(kernel_size=(3, 3), conv_general_dilated=shifted_matmul_conv, rngs=rngs)
        self.conv1 = nnx.Conv(1, 32, **conv)
        self.conv2 = nnx.Conv(32, 64, **conv)
        self.dense1 = nnx.Linear(7 * 7 * 64, 256, rngs=rngs)
        self.dense2 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        def pool(y):
            return nnx.avg_pool(y, window_shape=(2, 2), strides=(2, 2))

        x = pool(nnx.relu(self.conv1(x)))
        x = pool(nnx.relu(self.conv2(x)))
        x = x.reshape(x.shape[0], -1)
        return self.dense2(nnx.relu(self.dense1(x)))


MODELS = {"mlp": MLP, "cnn": CNN}
