"""Stop strings, checked one sampled character at a time.

A sequence's newest characters are *held back* while they could still be the start of a stop
string: delivered text never has to be taken back, so a stream and a whole answer agree. When a
stop string completes, the text ends before it and the stop string itself is dropped.
"""

from __future__ import annotations


def release_held(held: str, stops: tuple[str, ...]) -> tuple[int, bool]:
    """`held`: the characters not yet delivered, newest last (never containing a complete stop
    string before its last character). Returns `(n, stopped)`: `held[:n]` is final text now;
    with `stopped`, the rest is a stop string that just completed and the sequence ends.

    Of the stop strings ending at the newest character the longest starts first, so it is the
    first occurrence in the text."""
    ended = [s for s in stops if held.endswith(s)]
    if ended:
        return len(held) - max(map(len, ended)), True
    for start in range(len(held)):  # the longest suffix that may still grow into a stop string
        if any(stop.startswith(held[start:]) for stop in stops):
            return start, False
    return len(held), False
