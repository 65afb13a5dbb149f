"""One module per task. Each exposes ``run(pipe, job) -> list[PIL.Image]``, a numbered script of
named steps in the style of diffusers' own ``__call__``."""
