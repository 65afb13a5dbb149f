"""Start sdui: `python app.py [--listen] [--port 7860] [--api] [--gradio-auth user:pass] ...`

Builds Settings from the command line (flags as in AUTOMATIC1111's webui; `--help` lists them),
makes the engine, and serves the web UI (and the API with --api) on one port.
"""

import sys

from sdui.process import reexec_with_one_malloc_arena
from sdui.server import main

if __name__ == "__main__":
    reexec_with_one_malloc_arena()
    sys.exit(main())
