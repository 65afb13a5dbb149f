"""Benchmarks: ``python -m bench`` (figures 1-4 on this machine's CPU) and ``python -m bench.gpu``
(figure 5, only on a machine with a CUDA GPU). Every figure is a ratio against a baseline measured
in the same run; nothing here asserts a time."""
