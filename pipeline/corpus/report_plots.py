"""The PNG plots of `ssvd report` (pipeline/corpus/report.py), drawn with matplotlib's Agg backend.

Every plot is always written (a "no data" panel when the corpus has nothing for it), so the page
has the same shape for every corpus. Figures are `matplotlib.figure.Figure` objects, not pyplot's
global ones, so nothing is kept alive between reports.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: before anything imports pyplot

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 100
PLOTS = ("pairs_per_dialogue", "message_words", "speech_durations", "rejections", "instructions", "voices",
         "token_shares")


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None})
    tmp.replace(path)


def _empty(fig: Figure, title: str) -> None:
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=14, color="gray", transform=ax.transAxes)
    ax.set_axis_off()


def _colors(n: int) -> list:
    cmap = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def pairs_per_dialogue(data: dict[str, Any], path: Path) -> None:
    splits = [s for s in data["splits"] if s["dialogues"]["pairs_histogram"]]
    if not splits:
        fig = Figure(figsize=(6, 3))
        _empty(fig, "pairs per dialogue")
        return _save(fig, path)
    cols = min(4, len(splits))
    rows = (len(splits) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    for i, s in enumerate(splits):
        ax = fig.add_subplot(rows, cols, i + 1)
        h = s["dialogues"]["pairs_histogram"]
        xs = [int(k) for k in h]
        ax.bar(xs, [h[str(x)] for x in xs], width=0.8, color="tab:blue")
        ax.set_title(s["name"], fontsize=9)
        ax.set_xlabel("pairs", fontsize=8)
        ax.set_ylabel("dialogues", fontsize=8)
        ax.set_xticks(range(min(xs), max(xs) + 1))
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("question/answer pairs per dialogue (status ok)")
    _save(fig, path)


def message_words(data: dict[str, Any], raw: dict[str, Any], path: Path) -> None:
    words = raw["words"]
    fig = Figure(figsize=(8, 3.5))
    if not any(words[r] for r in words):
        _empty(fig, "words per message")
        return _save(fig, path)
    ax = fig.add_subplot(1, 1, 1)
    top = max(max(c) for c in words.values() if c)
    bins = range(0, top + 2, max(1, (top + 1) // 40 or 1))
    for role, color in (("user", "tab:orange"), ("assistant", "tab:blue")):
        c = words[role]
        if c:
            ax.hist(list(c.keys()), bins=bins, weights=list(c.values()), histtype="step", linewidth=1.8,
                    color=color, label=f"{role} (n={sum(c.values())}, mean={data['words'][role]['mean']})")
    ax.set_xlabel("words per message")
    ax.set_ylabel("messages")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("message length, all splits (status ok)")
    ax.legend(fontsize=8)
    _save(fig, path)


def speech_durations(raw: dict[str, Any], path: Path) -> None:
    durs = raw["durations"]
    fig = Figure(figsize=(8, 3.5))
    if not durs:
        _empty(fig, "speech duration")
        return _save(fig, path)
    ax = fig.add_subplot(1, 1, 1)
    names = list(durs)
    ax.hist([durs[n] for n in names], bins=30, stacked=True, color=_colors(len(names)),
            label=[f"{n} (n={len(durs[n])})" for n in names])
    ax.set_xlabel("dialogue duration (s)")
    ax.set_ylabel("dialogues")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("speech duration per dialogue (status ok)")
    ax.legend(fontsize=7)
    _save(fig, path)


def _stacked_barh(fig: Figure, title: str, rows: list[str], table: dict[str, dict[str, float]], xlabel: str) -> None:
    """One horizontal bar per row, stacked by the keys of table[row]."""
    keys = sorted({k for r in rows for k in table[r]})
    ax = fig.add_subplot(1, 1, 1)
    left = [0.0] * len(rows)
    for key, color in zip(keys, _colors(len(keys))):
        vals = [table[r].get(key, 0) for r in rows]
        ax.barh(range(len(rows)), vals, left=left, color=color, label=key)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))


def rejections(data: dict[str, Any], path: Path) -> None:
    table: dict[str, dict[str, float]] = {}
    for s in data["splits"]:
        for r in s["rejections"]:
            if r["count"]:
                t = table.setdefault(s["name"], {})
                t[r["reason"]] = t.get(r["reason"], 0) + r["count"]
    fig = Figure(figsize=(9, max(2.5, 1.2 + 0.35 * len(table))))
    if not table:
        _empty(fig, "rejections")
        return _save(fig, path)
    _stacked_barh(fig, "rejected rows per split and reason", list(table), table, "rows")
    fig.axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)


def instructions(data: dict[str, Any], path: Path) -> None:
    table = {}
    for s in data["splits"]:
        c = s["dialogues"]["instructions"]
        n = sum(c.values())
        if n:
            table[s["name"]] = {k: v / n for k, v in c.items()}
    fig = Figure(figsize=(9, max(2.5, 1.2 + 0.35 * len(table))))
    if not table:
        _empty(fig, "instruction mix")
        return _save(fig, path)
    _stacked_barh(fig, "instruction of each question/answer pair (share per split)", list(table), table,
                  "share of pairs")
    _save(fig, path)


def voices(data: dict[str, Any], path: Path) -> None:
    totals: dict[str, dict[str, int]] = {"assistant": {}, "user": {}}
    for s in data["splits"]:
        for role, c in s["speech"]["voices"].items():
            for v, n in c.items():
                totals[role][v] = totals[role].get(v, 0) + n
    n = max(len(totals["assistant"]), len(totals["user"]))
    fig = Figure(figsize=(10, max(2.5, 1.5 + 0.3 * n)))
    if not n:
        _empty(fig, "voices")
        return _save(fig, path)
    for i, role in enumerate(("assistant", "user")):
        ax = fig.add_subplot(1, 2, i + 1)
        items = sorted(totals[role].items(), key=lambda kv: (-kv[1], kv[0]))
        ax.barh(range(len(items)), [v for _, v in items], color="tab:blue" if role == "assistant" else "tab:orange")
        ax.set_yticks(range(len(items)))
        ax.set_yticklabels([k for k, _ in items], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("dialogues")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{role} voices")
    _save(fig, path)


def token_shares(data: dict[str, Any], path: Path) -> None:
    rows = data["mixture"]["splits"]
    fig = Figure(figsize=(max(8, 0.8 * len(rows) + 2), 4))
    if not rows:
        _empty(fig, "training tokens vs weights")
        return _save(fig, path)
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["token_share"] for r in rows], width=0.4, label="share of training tokens")
    ax.bar([x + 0.2 for x in xs], [r["weight_share"] for r in rows], width=0.4, label="share of manifest weight")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["split"] for r in rows], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("share")
    ax.set_title("training tokens per split (speech: frames, text: tokens) vs manifest weights", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_all(data: dict[str, Any], raw: dict[str, Any], out: Path) -> dict[str, str]:
    """Write every plot into `out`; {name: file name}."""
    out = Path(out)
    files = {name: f"{name}.png" for name in PLOTS}
    pairs_per_dialogue(data, out / files["pairs_per_dialogue"])
    message_words(data, raw, out / files["message_words"])
    speech_durations(raw, out / files["speech_durations"])
    rejections(data, out / files["rejections"])
    instructions(data, out / files["instructions"])
    voices(data, out / files["voices"])
    token_shares(data, out / files["token_shares"])
    return files
