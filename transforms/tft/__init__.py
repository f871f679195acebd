"""The tf.Transform backend: a spec's ``preprocessing_fn`` run through tensorflow_transform.

:mod:`~transforms.tft.backend` holds it; TensorFlow is imported only when a pipeline uses it.
"""

__all__ = ["backend"]
