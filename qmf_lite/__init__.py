"""qmf_lite: mean-field theory of quantized deep networks, numerics and torch simulations.

The public API (see ``API.md`` of the book) is re-exported here.
"""
from .activations import (
    Activation,
    QuantizedActivation,
    StepActivation,
    get_activation,
)
from .maps import (
    chi,
    correlation_map,
    covariance_map,
    depth_scale,
    fixed_point_c,
    fixed_point_q,
    iterate_maps,
    variance_map,
    variance_map_slope,
)

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "QuantizedActivation",
    "StepActivation",
    "get_activation",
    "variance_map",
    "variance_map_slope",
    "fixed_point_q",
    "covariance_map",
    "correlation_map",
    "chi",
    "fixed_point_c",
    "depth_scale",
    "iterate_maps",
]

from .tradeoff import (  # noqa: E402
    InitScheme,
    chi_max,
    chi_zero,
    levels_for_depth,
    lloyd_max,
    lloyd_max_activation,
    max_depth,
    optimal_init,
    quantization_error,
)

__all__ += [
    "InitScheme",
    "chi_max",
    "chi_zero",
    "levels_for_depth",
    "lloyd_max",
    "lloyd_max_activation",
    "max_depth",
    "optimal_init",
    "quantization_error",
]

from .simulate import (  # noqa: E402
    SimulationResult,
    circle_inputs,
    default_device,
    simulate_correlations,
    simulate_covariance,
)

__all__ += ["SimulationResult", "circle_inputs", "default_device", "simulate_correlations", "simulate_covariance"]

from .ste import QuantAct, ste_chi1, ste_slope  # noqa: E402

__all__ += ["QuantAct", "ste_chi1", "ste_slope"]
