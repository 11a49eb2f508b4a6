"""Human-readable mAP tables (percent), as the papers print them."""

from __future__ import annotations

import numpy as np

from raytal.eval.detection import DetectionResult


def format_map_table(rows: dict[str, DetectionResult]) -> str:
    """A markdown table: one row per named result, one column per tIoU (union of all rows), then Avg.

    Values are percent with one decimal; a tIoU a row was not evaluated at is left blank.
    """
    if not rows:
        raise ValueError("format_map_table: expected at least one result")
    tious = np.unique(np.concatenate([np.round(r.tious, 10) for r in rows.values()]))
    header = ["method"] + [f"mAP@{t:.10g}" for t in tious] + ["Avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, res in rows.items():
        by_t = {float(t): float(m) for t, m in zip(np.round(res.tious, 10), res.mAP)}
        cells = [f"{100 * by_t[float(t)]:.1f}" if float(t) in by_t else "" for t in tious]
        lines.append("| " + " | ".join([name, *cells, f"{100 * res.average_mAP:.1f}"]) + " |")
    return "\n".join(lines)
