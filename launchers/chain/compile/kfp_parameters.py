"""The chain's parameter table as a KFP pipeline's parameters.

kfp reads a pipeline's parameters from its function's signature, and a chain's parameters
are known only when the chain is read: :func:`pipeline_function` builds a function whose
signature lists them (same names, same defaults, all text) and hands the body the pipeline
channels by name. A step field that refers to a parameter becomes an f-string of channels
(:func:`channel_steps`), which kfp resolves when the task runs.
"""

# No postponed annotations here: kfp reads the pipeline function's parameter types.
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from launchers.chain.parameters import overlay
from launchers.chain.spec import ChainSpec


def pipeline_function(
    spec: ChainSpec,
    body: Callable[[Mapping[str, Any]], None],
    *,
    extra: Mapping[str, str] | None = None,
) -> Callable[..., None]:
    """A function kfp can decorate with ``dsl.pipeline``, one parameter per chain parameter.

    Args:
        spec: The chain; its parameters become the function's. A parameter's default is the
            value the chain was read with (its default, or a ``--param`` value); one without
            a default stays a required pipeline parameter.
        body: Called with every parameter's channel by name when kfp builds the pipeline.
        extra: More text parameters of the compiled pipeline only, with their defaults.

    Returns:
        The function, with its ``__signature__`` and annotations set for kfp.
    """
    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            # A default becomes the value the chain is compiled with (--param overrides it);
            # a parameter without one stays required.
            default=inspect.Parameter.empty if p.default is None else spec.values[name],
            annotation=str,
        )
        for name, p in spec.parameters.items()
    ]
    parameters += [
        inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=str
        )
        for name, default in (extra or {}).items()
    ]
    # Required parameters first, as Python's signatures require.
    parameters.sort(key=lambda p: p.default is not inspect.Parameter.empty)

    signature = inspect.Signature(parameters)

    def pipeline(*args: Any, **kwargs: Any) -> None:
        # kfp passes the channels positionally, in the signature's order.
        body(dict(signature.bind(*args, **kwargs).arguments))

    pipeline.__signature__ = signature  # type: ignore[attr-defined]
    pipeline.__annotations__ = {p.name: str for p in parameters}
    # kfp takes the parameters' descriptions from the docstring's Args section.
    described = parameter_descriptions(spec)
    args = "".join(f"    {name}: {text}\n" for name, text in described.items())
    pipeline.__doc__ = f"Chain {spec.name}.\n\nArgs:\n{args}" if args else f"Chain {spec.name}."
    return pipeline


def channel_steps(spec: ChainSpec, channels: Mapping[str, Any]) -> list[Any]:
    """The chain's steps with each field that refers to a parameter made of its channels."""
    return overlay(spec.steps, spec.raw_steps, lambda name: str(channels[name]))


def parameter_descriptions(spec: ChainSpec) -> dict[str, str]:
    """Each parameter's description, for the compiled pipeline's input definitions."""
    return {name: p.description for name, p in spec.parameters.items() if p.description}
