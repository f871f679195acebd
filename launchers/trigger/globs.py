"""Whether a GCS-style glob and a prefix or suffix can hold for the same object name.

A glob is read as tokens: a literal character, ``?`` (one character but ``/``), ``*`` (any
characters but ``/``) and ``**`` (any characters). Reading a prefix through the glob's tokens
(an automaton whose states are token positions) leaves a set of positions; if any is left,
some continuation of the prefix matches, since every remaining token can be satisfied. A
suffix is read the same way through the reversed glob.
"""

from __future__ import annotations

import heapq
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


def _suffix_table(suffix: str) -> list[int]:
    # The failure function of Knuth-Morris-Pratt: how much of the suffix a mismatch keeps.
    table = [0] * len(suffix)
    k = 0
    for i in range(1, len(suffix)):
        while k and suffix[i] != suffix[k]:
            k = table[k - 1]
        if suffix[i] == suffix[k]:
            k += 1
        table[i] = k
    return table


def _suffix_step(suffix: str, table: Sequence[int], state: int, char: str) -> int:
    while state and (state == len(suffix) or suffix[state] != char):
        state = table[state - 1]
    return state + 1 if state < len(suffix) and suffix[state] == char else state


def shortest_match(glob: str, prefix: str = "", suffix: str = "", limit: int = 1024) -> int | None:
    """The fewest UTF-8 bytes of a name that ``glob`` matches, starting with ``prefix`` and
    ending with ``suffix`` (``''`` for a glob: any name); None if there is none of at most
    ``limit`` bytes.

    The filters are read together (``??`` matches no name that starts with ``ab`` and ends
    with ``cd``): a cheapest-first search over the states of the glob, of the prefix read so
    far and of the suffix seen last, one character at a time. Characters outside the filters
    all act alike; one ASCII stand-in is tried for them. Names hold no CR or LF.
    """
    toks = tokens(glob or "**")
    alphabet = {c for kind, c in toks if kind == "lit"} | set(prefix) | set(suffix) | {"/"}
    alphabet.add(next(c for c in "abcdefghijklmnopqrstuvwxyz0123456789" if c not in alphabet))
    alphabet -= {"\r", "\n"}
    table = _suffix_table(suffix)
    start = (frozenset(_closure({0}, toks)), 0, 0)
    best = {start: 0}
    queue = [(0, 0, start)]
    order = 0
    while queue:
        cost, _, state = heapq.heappop(queue)
        if cost > best.get(state, limit + 1):
            continue
        positions, read, seen = state
        if len(toks) in positions and read == len(prefix) and seen == len(suffix):
            return cost
        for char in alphabet:
            if read < len(prefix) and char != prefix[read]:
                continue
            moved = _step(set(positions), toks, char)
            if not moved:
                continue
            step_cost = cost + len(char.encode("utf-8", "surrogatepass"))
            after = (
                frozenset(moved),
                min(read + 1, len(prefix)),
                _suffix_step(suffix, table, seen, char),
            )
            if step_cost <= limit and step_cost < best.get(after, limit + 1):
                best[after] = step_cost
                order += 1
                heapq.heappush(queue, (step_cost, order, after))
    return None


__all__ = ["can_end_with", "can_start_with", "shortest_match", "tokens"]
