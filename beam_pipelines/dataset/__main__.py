"""``python -m beam_pipelines.dataset SPEC [--input ...] [--output ...]``."""

from beam_pipelines.dataset.run import run

if __name__ == "__main__":
    run()
