"""gradtx: optimizers for JAX, each a chain of small pure gradient transformations."""

from gradtx.base import (EmptyState, GradientTransformation, OptState, Params, Schedule,
                         ScalarOrSchedule, TreeMismatchError, Updates, apply_updates, identity,
                         stateless)
from gradtx.combine import chain, fork, named_chain
from gradtx.schedules import constant_schedule, cosine_decay_schedule, triangular_schedule
from gradtx.moments import (BiasCorrectState, EmaState, InfinityNormState, MaxState, SecondMomentState,
                            TraceState, bias_correct, infinity_norm, interpolated_ema, nesterov_trace,
                            running_max, scale_by_ema, second_moment, trace)
from gradtx.optimizers import (adadelta, adagrad, adam, adam_direction, adamax, adamw, amsgrad,
                               averaged_momentum, lion, nadam, rmsprop, sgd)
from gradtx.scaling import (ScaleByScheduleState, SumOfSquaresState, UpdateRmsState,
                            WeightDecayScheduleState, add_decayed_weights, clip, clip_by_global_norm,
                            global_norm, scale, scale_by_adadelta, scale_by_learning_rate, scale_by_rms,
                            scale_by_schedule, scale_by_sign, scale_by_stddev, scale_by_sum_of_squares,
                            scale_by_update_rms, sqrt_eps)
from gradtx.fused import enable_cpu_multi_output_fusion, fuses_sibling_outputs, update_and_apply
from gradtx.packing import LeafSlot, Packing

__version__ = "0.1.0"

__all__ = [
    "BiasCorrectState", "EmaState", "EmptyState", "GradientTransformation", "OptState", "Params",
    "ScaleByScheduleState", "Schedule", "ScalarOrSchedule", "SecondMomentState", "SumOfSquaresState",
    "InfinityNormState", "MaxState", "TraceState", "TreeMismatchError", "UpdateRmsState", "Updates", "WeightDecayScheduleState",
    "constant_schedule", "cosine_decay_schedule", "triangular_schedule",
    "adadelta", "adagrad", "adam", "adam_direction", "adamax", "adamw", "amsgrad", "infinity_norm",
    "interpolated_ema", "lion", "nadam", "running_max", "scale_by_sign", "add_decayed_weights", "apply_updates",
    "averaged_momentum", "bias_correct", "chain", "clip", "clip_by_global_norm", "fork",
    "global_norm", "identity", "named_chain", "nesterov_trace", "rmsprop", "scale",
    "scale_by_adadelta", "scale_by_ema", "scale_by_learning_rate", "scale_by_rms",
    "scale_by_schedule", "scale_by_stddev", "scale_by_sum_of_squares", "scale_by_update_rms",
    "second_moment", "sgd", "sqrt_eps", "stateless", "trace",
    "enable_cpu_multi_output_fusion", "fuses_sibling_outputs", "update_and_apply", "LeafSlot", "Packing",
]
