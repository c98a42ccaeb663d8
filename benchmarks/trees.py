"""The parameter trees the benchmarks run on: shapes only, filled deterministically."""

from __future__ import annotations

import numpy as np

# ResNet-50 (He et al. 2016, torchvision layout, HWIO convs): (blocks, mid width, stride) per stage.
_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))


def resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """The 161 parameter shapes of ResNet-50 (25,557,032 floats): convs without bias,
    BatchNorm scale and bias, the final dense layer."""
    shapes: dict[str, tuple[int, ...]] = {"conv1/w": (7, 7, 3, 64), "bn1/scale": (64,), "bn1/bias": (64,)}
    c_in = 64
    for s, (blocks, mid) in enumerate(_STAGES, start=1):
        for b in range(blocks):
            name, c_out = f"layer{s}/{b}", 4 * mid
            for i, (k, ci, co) in enumerate(((1, c_in, mid), (3, mid, mid), (1, mid, c_out)), start=1):
                shapes[f"{name}/conv{i}/w"] = (k, k, ci, co)
                shapes[f"{name}/bn{i}/scale"] = (co,)
                shapes[f"{name}/bn{i}/bias"] = (co,)
            if b == 0:
                shapes[f"{name}/down/w"] = (1, 1, c_in, c_out)
                shapes[f"{name}/down/bn/scale"] = (c_out,)
                shapes[f"{name}/down/bn/bias"] = (c_out,)
            c_in = c_out
    shapes["fc/w"] = (2048, 1000)
    shapes["fc/b"] = (1000,)
    assert len(shapes) == 161 and sum(int(np.prod(v)) for v in shapes.values()) == 25_557_032
    return shapes


def tree_shapes(name: str) -> dict[str, tuple[int, ...]]:
    if name == "one16M":
        return {"w": (16 * 1024 * 1024,)}
    if name == "resnet50":
        return resnet50_shapes()
    if name.startswith("many"):  # many2000: 2,000 leaves of 1,000 floats
        return {f"l{i:04d}": (1000,) for i in range(int(name[4:]))}
    raise KeyError(name)


TREES = ("one16M", "resnet50", "many2000", "many500")


def numpy_tree(name: str, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Deterministic float32 leaves (a cheap pattern, not random: filling 25M floats
    with a PRNG would dominate the quick mode)."""
    out = {}
    for i, (k, shape) in enumerate(tree_shapes(name).items()):
        n = int(np.prod(shape))
        base = np.linspace(-1.0, 1.0, n, dtype=np.float32) * scale
        out[k] = np.roll(base, (seed * 7919 + i) % max(n, 1)).reshape(shape)
    return out


def n_floats(name: str) -> int:
    return sum(int(np.prod(s)) for s in tree_shapes(name).values())
