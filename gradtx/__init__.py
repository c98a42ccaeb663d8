"""gradtx: optimizers for JAX, each a chain of small pure gradient transformations.

The flat public API. ``__all__`` comes from the registry (``gradtx/registry.py``), one
row per name; the imports below make each name visible to type checkers, and
``tests/test_registry.py`` checks that the two agree.
"""

from gradtx.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Schedule,
    TreeMismatchError,
    UpdateError,
    Updates,
    apply_updates,
)
from gradtx.combine import chain, fork, identity, named_chain, renamed, stateless
from gradtx.hyperparams import AccumulatorDtype, Decay, DecayBelowOne, LearningRate, NonNegative, Positive
from gradtx.moments import (
    bias_correct,
    infinity_norm,
    interpolated_ema,
    nesterov_trace,
    running_max,
    scale_by_ema,
    second_moment,
    trace,
)
from gradtx.optimizers.adam import adam, adam_direction, adamax, adamw, amsgrad, nadam
from gradtx.optimizers.adaptive import adadelta, adagrad, rmsprop
from gradtx.optimizers.sgd import averaged_momentum, sgd
from gradtx.optimizers.sign import lion
from gradtx.perf.fused import update_and_apply
from gradtx.perf.packing import LeafSlot, Packing
from gradtx.perf.xla import enable_cpu_multi_output_fusion, fuses_sibling_outputs
from gradtx.scaling import (
    add_decayed_weights,
    clip,
    clip_by_global_norm,
    global_norm,
    scale,
    scale_by_adadelta,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_schedule,
    scale_by_sign,
    scale_by_stddev,
    scale_by_sum_of_squares,
    scale_by_update_rms,
    sqrt_eps,
)
from gradtx.schedules import constant_schedule, cosine_decay_schedule, triangular_schedule
from gradtx.transform import Field, Step, Transformation, declare, primitive

# isort: split
# After the names above: the registry describes them.
from gradtx import registry

__version__ = "0.2.0"

__all__ = registry.names()
