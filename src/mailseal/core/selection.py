"""Which header field instances a signature covers (RFC 6376 section 5.4.2).

"If there are multiple instances of a field, they are selected from the
bottom up": the n-th mention of a name in h= takes the n-th field of that name
counting from the bottom. A mention with no instance left is a "nonexistent
header field" and contributes nothing (that is how oversigning works).
"""

from __future__ import annotations

from collections.abc import Sequence

from mailseal.core.message import HeaderField


def index_by_name(headers: Sequence[HeaderField]) -> dict[str, list[int]]:
    """Lower-cased name -> positions, bottom-most first."""
    index: dict[str, list[int]] = {}
    for position in range(len(headers) - 1, -1, -1):
        index.setdefault(headers[position].key, []).append(position)
    return index


def select(
    names: Sequence[str], index: dict[str, list[int]], *, exclude: int | None = None
) -> tuple[list[int], int]:
    """Positions covered by ``names`` in h= order, and how many mentions found nothing.

    ``exclude`` is the position of the signature being checked: it never covers itself.
    """
    used: dict[str, int] = {}
    chosen: list[int] = []
    missing = 0
    for name in names:
        key = name.lower()
        positions = index.get(key, ())
        n = used.get(key, 0)
        while n < len(positions) and positions[n] == exclude:
            n += 1
        if n < len(positions):
            chosen.append(positions[n])
            used[key] = n + 1
        else:
            used[key] = n
            missing += 1
    return chosen, missing
