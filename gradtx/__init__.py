"""gradtx: optimizers for JAX, each a chain of small pure gradient transformations.

The flat public API. ``__all__`` comes from the registry (``gradtx/registry.py``), one
row per name; the imports below make each name visible to type checkers, and
``tests/test_registry.py`` checks that the two agree.
"""

from gradtx.adaptive_moments import (
    belief_moment,
    gradient_difference,
    rectification,
    scale_by_adan,
    scale_by_belief,
    scale_by_radam,
    scale_by_yogi,
    yogi_moment,
)
from gradtx.averaging import *  # noqa: F403
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
from gradtx.checkpoint import *  # noqa: F403
from gradtx.clipping import *  # noqa: F403
from gradtx.combine import chain, fork, identity, named_chain, renamed, stateless
from gradtx.diagnostics import *  # noqa: F403
from gradtx.factored import (
    clip_by_block_rms,
    scale_by_cover_accumulators,
    scale_by_factored_rms,
    scale_by_param_block_rms,
    scale_by_sm3,
)
from gradtx.first_order import add_noise, scale_by_optimistic_gradient, scale_by_polyak, scale_by_rprop
from gradtx.hyperparams import AccumulatorDtype, Decay, DecayBelowOne, LearningRate, NonNegative, Positive
from gradtx.layerwise import lars_trust_ratio, layer_second_moment, scale_by_novograd, scale_by_trust_ratio
from gradtx.linesearch import scale_by_backtracking_linesearch, scale_by_zoom_linesearch
from gradtx.masking import *  # noqa: F403
from gradtx.microbatching import *  # noqa: F403
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
from gradtx.optimizers.adam import (
    adabelief,
    adam,
    adam_direction,
    adamax,
    adamaxw,
    adamw,
    adan,
    amsgrad,
    nadam,
    nadamw,
    radam,
    yogi,
)
from gradtx.optimizers.adaptive import adadelta, adagrad, rmsprop
from gradtx.optimizers.factored import adafactor, sm3
from gradtx.optimizers.first_order import (
    noisy_sgd,
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    polyak_sgd,
    rprop,
)
from gradtx.optimizers.layerwise import fromage, lamb, lars, novograd
from gradtx.optimizers.quasi_newton import lbfgs
from gradtx.optimizers.sgd import averaged_momentum, sgd
from gradtx.optimizers.sign import lion, sign_sgd, signum
from gradtx.perf.fused import update_and_apply
from gradtx.perf.packing import LeafSlot, Packing
from gradtx.perf.xla import enable_cpu_multi_output_fusion, fuses_sibling_outputs
from gradtx.quasi_newton import scale_by_lbfgs
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
from gradtx.schedules import *  # noqa: F403 - each of these modules lists its names in __all__
from gradtx.sharding import *  # noqa: F403
from gradtx.sweeps import *  # noqa: F403
from gradtx.transform import Field, Step, Transformation, declare, primitive
from gradtx.utilities import *  # noqa: F403
from gradtx.wrappers import *  # noqa: F403

# isort: split
# The recent methods (issue 10): each module lists its names in __all__.
from gradtx.curvature import *  # noqa: F403
from gradtx.galore import *  # noqa: F403
from gradtx.kronecker import *  # noqa: F403
from gradtx.lr_free import *  # noqa: F403
from gradtx.matrix import *  # noqa: F403
from gradtx.optimizers.curvature import *  # noqa: F403
from gradtx.optimizers.lr_free import *  # noqa: F403
from gradtx.optimizers.muon import *  # noqa: F403
from gradtx.optimizers.preconditioned import *  # noqa: F403
from gradtx.optimizers.recent import *  # noqa: F403
from gradtx.plateau import *  # noqa: F403
from gradtx.privacy import *  # noqa: F403
from gradtx.recent_moments import *  # noqa: F403
from gradtx.sam import *  # noqa: F403
from gradtx.schedule_free import *  # noqa: F403

# isort: split
# After the names above: the registry describes them.
from gradtx import microbatching, registry, tree

__version__ = "0.2.0"

__all__ = registry.names()
