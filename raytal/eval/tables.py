"""The one markdown mAP table (percent), as the papers print them: a row per result, a column per tIoU."""

from __future__ import annotations

from raytal.eval.detection import DetectionResult


def map_table(rows: dict[str, dict], label: str = "method", decimals: int = 2) -> str:
    """Rows of evaluation JSON (``DetectionResult.to_json()``: ``mAP`` by tIoU key, ``average_mAP``),
    columns the union of their tIoUs in increasing order, then the average; a tIoU a row was not
    evaluated at is left blank."""
    if not rows:
        raise ValueError("map_table: expected at least one result")
    keys = sorted({k for r in rows.values() for k in r["mAP"]}, key=float)
    lines = ["| " + " | ".join([label, *(f"mAP@{k}" for k in keys), "avg"]) + " |", "|" + "---|" * (len(keys) + 2)]
    for name, res in rows.items():
        cells = [f"{100 * res['mAP'][k]:.{decimals}f}" if k in res["mAP"] else "" for k in keys]
        lines.append("| " + " | ".join([name, *cells, f"{100 * res['average_mAP']:.{decimals}f}"]) + " |")
    return "\n".join(lines)


def format_map_table(rows: dict[str, DetectionResult], decimals: int = 1) -> str:
    """``map_table`` of DetectionResults."""
    return map_table({name: res.to_json() for name, res in rows.items()}, decimals=decimals)
