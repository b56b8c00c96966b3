"""PNG plots of an evaluation: precision-recall curves and the confusion matrix.

matplotlib comes with the ``eval`` extra (``pip install 'detection-agent[eval]'``); it is
imported here only, with the Agg backend (no display on a device). Curves: COCO's
interpolated precision at IoU 0.5 over its 101 recall points, or the VOC per-class curves;
the ten classes with the most objects are drawn, plus the mean (bold).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List

import numpy as np

from agent.errors import AgentError
from agent.evaluate.runner import Evaluation, objects_per_class

log = logging.getLogger(__name__)

MAX_CURVES = 10


def write_plots(ev: Evaluation, out_dir: str) -> List[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AgentError("--plots needs matplotlib: pip install 'detection-agent[eval]'") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_pr_curves(plt, ev, out / "pr_curves.png")]
    if ev.confusion is not None:
        written.append(_confusion(plt, ev, ev.confusion, out / "confusion_matrix.png"))
    for path in written:
        log.info("wrote %s", path)
    return written


def _pr_curves(plt, ev: Evaluation, path: Path) -> Path:
    names = dict(zip(ev.gt.category_ids, ev.gt.names))
    counts = objects_per_class(ev.gt)
    top = sorted(counts, key=lambda c: -counts[c])[:MAX_CURVES]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    if ev.coco is not None:
        recall = ev.coco.recall_points
        pr = ev.coco.pr50
        column = {c: k for k, c in enumerate(ev.coco.category_ids)}
        for c in top:
            ax.plot(
                recall,
                np.clip(pr[:, column[c]], 0, None),
                lw=1,
                label=f"{names[c]} {ev.coco.per_class_ap50[c]:.3f}",
            )
        defined = pr[:, (pr > -1).any(0)]
        if defined.size:
            ax.plot(
                recall, defined.mean(1), lw=3, color="k", label=f"all classes {ev.coco.stats['AP50']:.3f}"
            )
        title = "precision-recall at IoU 0.50 (COCO, 101-point interpolation)"
    else:
        voc = ev.voc_result
        for c in top:
            curve = voc.curves[c]
            ap = voc.per_class[c]
            ax.plot(
                curve.recall,
                curve.precision,
                lw=1,
                label=f"{names[c]} {ap:.3f}" if ap is not None else names[c],
            )
        title = f"precision-recall at IoU {voc.iou:g} ({voc.metric}, mAP {voc.mean_ap or 0:.3f})"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _confusion(plt: Any, ev: Evaluation, confusion: np.ndarray, path: Path) -> Path:
    matrix = confusion.astype(np.float64)
    labels = [*ev.gt.names, "background"]
    # Normalise each true class's row, so rare and common classes read on one scale.
    totals = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    size = max(6.0, min(16.0, 3 + 0.25 * len(labels)))
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=120)
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(labels))
    fontsize = 8 if len(labels) <= 20 else 5
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=fontsize)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        int(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"confusion matrix (score >= {ev.config.score_threshold:g}, rows normalised)",
    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
