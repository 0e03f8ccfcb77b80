"""Benchmarks: load generator, raw decode ceiling, sampler and structured-output timings."""
