"""``python -m beam_pipelines.streaming SPEC [--artifact DIR] [--output DIR]``."""

from beam_pipelines.streaming.run import run

if __name__ == "__main__":
    run()
