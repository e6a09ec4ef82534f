"""Which of eSpeak's phonemes belong to which written token, when eSpeak fused words ("in the" -> "ɪnðə") or
split one: `align` pairs eSpeak's phoneme words with the tokens (used by tts/piper_backend.py)."""
from __future__ import annotations

from typing import Callable

STRESS = ("ˈ", "ˌ")


def units(phonemes: list[str]) -> int:
    """Phonemes that take time (stress marks are attached to the next phoneme)."""
    return sum(1 for p in phonemes if p not in STRESS)


def split_at_units(phonemes: list[str], sizes: list[int]) -> list[list[str]]:
    """Split a phoneme list into parts of `sizes` units each (stress marks go with the next unit)."""
    parts: list[list[str]] = [[] for _ in sizes]
    k, used = 0, 0
    for p in phonemes:
        while k < len(sizes) - 1 and used >= sizes[k]:
            k, used = k + 1, 0
        parts[k].append(p)
        if p not in STRESS:
            used += 1
    return parts


def proportional_sizes(total: int, weights: list[int]) -> list[int]:
    """`total` units shared in proportion to `weights`, each part at least 1 when there are enough."""
    wsum = sum(weights) or 1
    sizes, prev = [], 0
    for i in range(len(weights) - 1):
        later = len(weights) - 1 - i
        cut = round(total * sum(weights[: i + 1]) / wsum)
        cut = max(min(max(cut, prev + 1), total - later), prev)
        sizes.append(cut - prev)
        prev = cut
    sizes.append(total - prev)
    return sizes


def align(words: list[list[str]], tokens: list[str], isolated: Callable[[str], list[str]]) -> list[list[str]]:
    """Assign eSpeak's phoneme words to the spoken tokens.

    Usually one to one. Otherwise a small dynamic programme pairs them by length in phonemes,
    allowing one phoneme word to cover 2-3 tokens (eSpeak fused them: its phonemes are split
    at the boundaries of the tokens' isolated phonemizations when they spell the same sounds,
    else in proportion to their isolated lengths) or 2-3 phoneme words to cover one token.
    """
    if len(words) == len(tokens):
        return words
    n, m = len(words), len(tokens)
    iso = [isolated(t) for t in tokens]
    wl = [units(w) for w in words]
    tl = [units(p) for p in iso]
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    back: list[list[tuple[int, int] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    moves = [(1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (1, 0), (0, 1)]
    for a in range(n + 1):
        for b in range(m + 1):
            if cost[a][b] == inf:
                continue
            for da, db in moves:
                if a + da > n or b + db > m:
                    continue
                w_len, t_len = sum(wl[a : a + da]), sum(tl[b : b + db])
                if (da, db) == (1, 1):
                    penalty = 0.0
                elif da and db:
                    penalty = 0.5  # a fusion or a split
                else:
                    penalty = 3.0 + w_len + t_len  # phonemes or a token left unpaired
                c = cost[a][b] + abs(w_len - t_len) + penalty
                if c < cost[a + da][b + db]:
                    cost[a + da][b + db] = c
                    back[a + da][b + db] = (da, db)
    out: list[list[str]] = [[] for _ in tokens]
    a, b = n, m
    while a or b:
        step = back[a][b]
        assert step is not None
        da, db = step
        group = [p for k in range(a - da, a) for p in (words[k] + [" "])][:-1] if da else []
        if db == 1:
            out[b - 1] = group
        elif db > 1:
            parts = split_fused(group, iso[b - db:b])
            for k, part in enumerate(parts):
                out[b - db + k] = part
        a, b = a - da, b - db
    return out


def split_fused(fused: list[str], isolated: list[list[str]]) -> list[list[str]]:
    """Split the phonemes of fused tokens at their isolated phonemizations' boundaries when they spell the same
    sounds, else in proportion to their isolated lengths."""
    strip = [p for p in fused if p not in STRESS]
    iso_strip = [[p for p in w if p not in STRESS] for w in isolated]
    if strip == [p for w in iso_strip for p in w]:
        sizes = [len(w) for w in iso_strip]
    else:
        sizes = proportional_sizes(len(strip), [max(len(w), 1) for w in iso_strip])
    return split_at_units(fused, sizes)
