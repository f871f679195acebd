"""Serving: the :class:`Preprocessor` replays a transform artifact on request rows.

Needs neither Beam nor a cloud client (import-linter checks it): a prediction server that
imports this package stays small and starts fast.
"""

from transforms.serving.preprocessor import Preprocessor

__all__ = ["Preprocessor"]
