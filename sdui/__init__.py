"""sdui: a local Stable Diffusion studio (web UI, A1111-compatible API, CLI) on one model manager."""

__version__ = "0.1.0"
