"""Sampling: request settings (params), the sampler chain, grammars and JSON Schema."""
from .params import DEFAULT_SAMPLERS, ParamError, SamplingParams, parse_sampling_params
from .sampler import make_sampler

__all__ = ["SamplingParams", "ParamError", "parse_sampling_params", "make_sampler",
           "DEFAULT_SAMPLERS"]
