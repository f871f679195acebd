"""Whether a GCS-style glob and a prefix or suffix can hold for the same object name.

A glob is read as tokens: a literal character, ``?`` (one character but ``/``), ``*`` (any
characters but ``/``) and ``**`` (any characters). Reading a prefix through the glob's tokens
(an automaton whose states are token positions) leaves a set of positions; if any is left,
some continuation of the prefix matches, since every remaining token can be satisfied. A
suffix is read the same way through the reversed glob.
"""

from __future__ import annotations

from collections.abc import Sequence

# Token kinds besides a literal character.
_ONE = "?"
_PART = "*"
_ANY = "**"


def tokens(glob: str) -> list[tuple[str, str]]:
    """The glob as ``(kind, character)`` pairs; kind is ``lit``, ``?``, ``*`` or ``**``."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append((_ANY, ""))
            i += 2
        elif glob[i] in (_ONE, _PART):
            out.append((glob[i], ""))
            i += 1
        else:
            out.append(("lit", glob[i]))
            i += 1
    return out


def _closure(states: set[int], toks: Sequence[tuple[str, str]]) -> set[int]:
    # A star may match nothing: its position also stands for the one after it.
    out = set(states)
    stack = list(states)
    while stack:
        i = stack.pop()
        if i < len(toks) and toks[i][0] in (_PART, _ANY) and i + 1 not in out:
            out.add(i + 1)
            stack.append(i + 1)
    return out


def _step(states: set[int], toks: Sequence[tuple[str, str]], char: str) -> set[int]:
    out: set[int] = set()
    for i in states:
        if i == len(toks):
            continue
        kind, literal = toks[i]
        if (kind == "lit" and literal == char) or (kind == _ONE and char != "/"):
            out.add(i + 1)
        elif (kind == _PART and char != "/") or kind == _ANY:
            out.add(i)
    return _closure(out, toks)


def _viable(toks: Sequence[tuple[str, str]], text: str) -> bool:
    states = _closure({0}, toks)
    for char in text:
        states = _step(states, toks, char)
        if not states:
            return False
    return True


def can_start_with(glob: str, prefix: str) -> bool:
    """Whether some name that ``glob`` matches starts with ``prefix``."""
    return _viable(tokens(glob), prefix)


def can_end_with(glob: str, suffix: str) -> bool:
    """Whether some name that ``glob`` matches ends with ``suffix``."""
    return _viable(tokens(glob)[::-1], suffix[::-1])


__all__ = ["can_end_with", "can_start_with", "tokens"]
