"""``python -m beam_pipelines.streaming SPEC [--artifact DIR] [--output DIR]``.

A user's mistake ends as one line, ``error: <message>``, with exit code 2
(:mod:`beam_pipelines.entry`).
"""

import sys

from beam_pipelines.entry import main
from beam_pipelines.streaming.run import run

if __name__ == "__main__":
    sys.exit(main(run))
