"""Reports of an evaluation: terminal tables, the JSON and CSV files, model comparisons.

JSON, COCO: ``{"metric": "coco", "engine", "stats": {AP, AP50, AP75, APs, APm, APl, AR1,
AR10, AR100, ARs, ARm, ARl}, "per_class": {name: AP}}``; VOC: ``{"metric": "voc07" |
"voc12", "iou", "mAP", "per_class": {name: AP}}``. Both add ``counts`` (images, objects,
predictions), per-class detail and, for ``eval --model``, ``model`` and ``latency_ms``.
A class without ground truth has AP ``null`` (pycocotools' -1); a COCO stat that is
undefined (no object in that size range) stays -1, as pycocotools prints it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any, Dict, List, Optional, Sequence

from agent.evaluate.coco import STAT_NAMES, stats_table
from agent.evaluate.runner import Evaluation, label_of, objects_per_class, predictions_per_class
from agent.fileio import atomic_write_text

log = logging.getLogger(__name__)


def _f(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def to_json(ev: Evaluation) -> Dict[str, Any]:
    names = label_of(ev.gt)
    out: Dict[str, Any]
    if ev.coco is not None:
        out = {
            "metric": "coco",
            "engine": ev.coco.engine,
            "stats": dict(ev.coco.stats),
            "per_class": {names[c]: ev.coco.per_class.get(c) for c in ev.gt.category_ids},
            "per_class_ap50": {names[c]: ev.coco.per_class_ap50.get(c) for c in ev.gt.category_ids},
        }
    elif ev.voc is not None:
        voc = ev.voc
        out = {
            "metric": voc.metric,
            "iou": voc.iou,
            "mAP": voc.mean_ap,
            "per_class": {names[c]: voc.per_class[c] for c in ev.gt.category_ids},
            "plus_one": voc.plus_one,
            "score_threshold": voc.score_threshold,
            "per_class_prf": {
                names[c]: dict(zip(("precision", "recall", "f1"), voc.prf[c])) for c in ev.gt.category_ids
            },
        }
    else:
        raise ValueError("evaluation has no results")
    out["counts"] = {
        "images": ev.gt.num_images,
        "objects": int((ev.gt.iscrowd == 0).sum()),
        "ignored_objects": int(ev.gt.iscrowd.sum()),
        "predictions": len(ev.preds),
        "per_class_objects": {names[c]: n for c, n in objects_per_class(ev.gt).items()},
        "per_class_predictions": {names[c]: n for c, n in predictions_per_class(ev.preds).items()},
    }
    out["ground_truth"] = ev.gt.source
    out["predictions"] = ev.preds.source
    if ev.confusion is not None:
        out["confusion_matrix"] = {
            "labels": [*ev.gt.names, "background"],
            "rows": "true class",
            "matrix": ev.confusion.tolist(),
        }
    out.update(ev.extra)
    out["seconds"] = {k: round(v, 4) for k, v in ev.seconds.items()}
    return out


def write_json(path: str, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def summary_text(ev: Evaluation) -> str:
    gt = ev.gt
    counts = (
        f"{gt.num_images} images, {int((gt.iscrowd == 0).sum())} objects"
        + (f" (+{int(gt.iscrowd.sum())} ignored)" if gt.iscrowd.any() else "")
        + f", {len(gt.category_ids)} classes, {len(ev.preds)} predictions"
    )
    lines = []
    if ev.coco is not None:
        lines.append(f"COCO box metrics (engine {ev.coco.engine}): {counts}")
        lines += [f"  {name:<6} {value:7.4f}   {text}" for name, text, value in stats_table(ev.coco)]
    else:
        voc = ev.voc_result
        kind = "VOC2007 11-point" if voc.metric == "voc07" else "VOC2010+ all-point"
        lines.append(
            f"PASCAL VOC AP ({kind}, IoU >= {voc.iou:g}, +1 pixel convention "
            f"{'on' if voc.plus_one else 'off'}): {counts}"
        )
        lines.append(
            f"  mAP    {_f(voc.mean_ap)}   mean over {sum(v is not None for v in voc.per_class.values())} "
            "classes with ground truth"
        )
    return "\n".join(lines)


def per_class_rows(ev: Evaluation) -> List[Dict[str, Any]]:
    names = label_of(ev.gt)
    objects = objects_per_class(ev.gt)
    preds = predictions_per_class(ev.preds)
    rows = []
    for c in ev.gt.category_ids:
        row: Dict[str, Any] = {
            "class": names[c],
            "objects": objects.get(c, 0),
            "predictions": preds.get(c, 0),
        }
        if ev.coco is not None:
            row.update(AP=ev.coco.per_class.get(c), AP50=ev.coco.per_class_ap50.get(c))
        else:
            p, r, f1 = ev.voc_result.prf[c]
            row.update(AP=ev.voc_result.per_class[c], precision=p, recall=r, F1=f1)
        rows.append(row)
    return rows


def per_class_text(ev: Evaluation) -> str:
    rows = per_class_rows(ev)
    width = max([5, *(len(r["class"]) for r in rows)])
    keys = [k for k in rows[0] if k not in ("class", "objects", "predictions")] if rows else []
    note = ("" if ev.coco is not None
            else f" (precision/recall/F1 at score >= {ev.voc_result.score_threshold:g})")
    lines = [
        f"per class{note}",
        f"  {'class':<{width}} {'objects':>8} {'predictions':>11} " + " ".join(f"{k:>9}" for k in keys),
    ]
    for r in rows:
        lines.append(
            f"  {r['class']:<{width}} {r['objects']:>8} {r['predictions']:>11} "
            + " ".join(f"{_f(r[k]):>9}" for k in keys)
        )
    return "\n".join(lines)


def write_csv(path: str, ev: Evaluation) -> None:
    rows = per_class_rows(ev)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["class"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write_text(path, buffer.getvalue())


def latency_text(latency: Dict[str, float], images: int, seconds: float) -> str:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in latency.items())
    return (
        f"latency per image (median ms): {parts}; {images} images in {seconds:.1f} s "
        f"({images / seconds if seconds else 0:.1f} images/s)"
    )


def compare_json(a: Evaluation, b: Evaluation, labels: Sequence[str]) -> Dict[str, Any]:
    ja, jb = to_json(a), to_json(b)
    diff: Dict[str, Optional[float]]
    if a.coco is not None and b.coco is not None:
        diff = {k: b.coco.stats[k] - a.coco.stats[k] for k in STAT_NAMES}
    else:
        diff = {"mAP": _sub(jb["mAP"], ja["mAP"])}
    per_class = {name: _sub(jb["per_class"][name], ja["per_class"][name]) for name in ja["per_class"]}
    ja.setdefault("model", labels[0])
    jb.setdefault("model", labels[1])
    # Keyed a / b, not by path: comparing a model with itself (a determinism check) keeps both.
    return {
        "metric": ja["metric"],
        "models": {"a": ja, "b": jb},
        "difference": {"stats": diff, "per_class": per_class, "of": "b - a"},
    }


def compare_text(a: Evaluation, b: Evaluation, labels: Sequence[str]) -> str:
    data = compare_json(a, b, labels)
    lines = [
        f"comparison: B = {labels[1]} minus A = {labels[0]}",
        f"  {'metric':<6} {'A':>8} {'B':>8} {'B - A':>9}",
    ]
    if a.coco is not None and b.coco is not None:
        for k in STAT_NAMES:
            va, vb = a.coco.stats[k], b.coco.stats[k]
            lines.append(f"  {k:<6} {va:8.4f} {vb:8.4f} {vb - va:+9.4f}")
    else:
        d = data["difference"]["stats"]["mAP"]
        lines.append(
            f"  {'mAP':<6} {_f(a.headline):>8} {_f(b.headline):>8} {'-' if d is None else f'{d:+.4f}':>9}"
        )
    changed = sorted(
        ((v, k) for k, v in data["difference"]["per_class"].items() if v),
        key=lambda t: abs(t[0]),
        reverse=True,
    )[:5]
    if changed:
        lines.append("  largest per-class AP changes: " + ", ".join(f"{k} {v:+.4f}" for v, k in changed))
    return "\n".join(lines)


def _sub(b: Optional[float], a: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else b - a
