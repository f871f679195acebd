"""``python -m beam_pipelines.dataset SPEC [--input ...] [--output ...]``.

A user's mistake ends as one line, ``error: <message>``, with exit code 2
(:mod:`beam_pipelines.entry`).
"""

import sys

from beam_pipelines.dataset.run import run
from beam_pipelines.entry import main

if __name__ == "__main__":
    sys.exit(main(run))
