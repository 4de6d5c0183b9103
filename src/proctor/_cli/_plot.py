"""``python -m proctor bench --plot FILE.png``: the ratios of a run, drawn.

One horizontal bar per benchmark row: proctor's ratio to the stdlib's
``multiprocessing`` measured in the same run, on a logarithmic axis (2x ahead and 2x
behind are the same distance from parity), green where proctor is ahead, red where
it is behind, with a line at parity. Where a row knows the floor that the machine
sets for its work (``floor_ratio``: a bare ``os.fork()``, a raw socket pair, a plain
memory copy, measured in the same run), a black tick shows the ratio that floor
would get: the gap between a bar's end and its tick is what is left to gain. A row
combined from several runs (``bench --runs N``) draws its median ratio, with a
whisker from the lowest to the highest ratio of the runs.

matplotlib is an optional extra (``pip install 'proctor[plot]'``); it is imported
only here, with its non-interactive backend, so no display is needed.
"""

from __future__ import annotations

import math
import textwrap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("INSTALL_HINT", "check_matplotlib", "plot_ratios")

INSTALL_HINT = (
    "bench --plot draws with matplotlib, which is not installed: install it with "
    "pip install 'proctor[plot]' (or pip install matplotlib)"
)

_AHEAD, _BEHIND, _FLOOR = "#2e7d32", "#c62828", "black"
#: A row shown for reference, not a comparison of what a user runs (the pure-Python
#: lock where the C accelerator is active): grey, and its label says so.
_REFERENCE = "#9e9e9e"


def check_matplotlib() -> None:
    """Raise before a run of several minutes, not after it, if the plot cannot be drawn.

    Raises:
        ModuleNotFoundError: matplotlib is not installed (the message says how to get it).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(INSTALL_HINT, name="matplotlib") from exc


def plot_ratios(rows: list[dict], path: Path, *, title: str) -> None:
    """Draw ``rows``' ratios (and their floors, where known) into the image ``path``.

    The format follows the file's suffix (``.png``, ``.svg``, ``.pdf``).

    Raises:
        ValueError: no row has a ratio to draw.
        ModuleNotFoundError: matplotlib is not installed.
    """
    drawn = [r for r in rows if r.get("ratio", 0) > 0 and math.isfinite(r["ratio"])]
    if not drawn:
        raise ValueError("no benchmark row has a ratio to draw")
    check_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    from matplotlib import pyplot

    names = [r["benchmark"] + (" (reference)" if r.get("reference") else "") for r in drawn]
    labels = ["\n".join(textwrap.wrap(name, 48)) for name in names]
    ratios = [r["ratio"] for r in drawn]
    positions = list(range(len(drawn)))[::-1]  # the first row at the top
    figure, axes = pyplot.subplots(figsize=(10, 0.42 * len(drawn) + 1.6))
    try:
        axes.set_xscale("log")
        # Bars start at parity, so a bar's length is how far ahead or behind it is.
        axes.barh(
            positions,
            [ratio - 1 for ratio in ratios],
            left=1,
            color=[
                _REFERENCE if r.get("reference") else _AHEAD if r["ratio"] >= 1 else _BEHIND
                for r in drawn
            ],
            height=0.6,
        )
        ranged = [(pos, r) for pos, r in zip(positions, drawn, strict=True) if "ratio_range" in r]
        if ranged:
            axes.errorbar(
                [r["ratio"] for _, r in ranged],
                [pos for pos, _ in ranged],
                xerr=[
                    [r["ratio"] - r["ratio_range"][0] for _, r in ranged],
                    [r["ratio_range"][1] - r["ratio"] for _, r in ranged],
                ],
                fmt="none",
                ecolor="dimgrey",
                elinewidth=1,
                capsize=3,
                zorder=2,
            )
        floors = [
            (pos, r["floor_ratio"])
            for pos, r in zip(positions, drawn, strict=True)
            if "floor_ratio" in r
        ]
        if floors:
            axes.scatter(
                [ratio for _, ratio in floors],
                [pos for pos, _ in floors],
                marker="|",
                s=260,
                linewidths=2,
                color=_FLOOR,
                label="the machine's floor for the same work (same run)",
                zorder=3,
            )
            axes.legend(loc="lower right", fontsize=8)
        for pos, row, ratio in zip(positions, drawn, ratios, strict=True):
            # Past the floor's tick and the whisker too, where they lie beyond the
            # bar, not across them.
            low, high = row.get("ratio_range", (ratio, ratio))
            at = max(ratio, high, row.get("floor_ratio", 0)) if ratio >= 1 else min(ratio, low)
            axes.annotate(
                f"{ratio:.2f}x",
                (at, pos),
                xytext=(4 if ratio >= 1 else -4, 0),
                textcoords="offset points",
                ha="left" if ratio >= 1 else "right",
                va="center",
                fontsize=8,
            )
        axes.axvline(1, color="grey", linewidth=1)
        every = (
            ratios
            + [ratio for _, ratio in floors]
            + [bound for _, r in ranged for bound in r["ratio_range"]]
        )
        axes.set_xlim(min(min(every), 1) / 1.6, max(max(every), 1) * 1.6)
        axes.set_yticks(positions)
        axes.set_yticklabels(labels, fontsize=8)
        axes.set_xlabel(
            "proctor vs multiprocessing, same run (log scale; right of 1: proctor ahead)"
        )
        axes.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)
        axes.grid(axis="x", which="both", alpha=0.25)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
