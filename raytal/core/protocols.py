"""Evaluation protocols: the tIoU thresholds a dataset's mAP is averaged over (docs/design.md §7 "Detection mAP").

THUMOS14 0.3:0.1:0.7; ActivityNet 0.5:0.05:0.95; the weakly-supervised papers report THUMOS14 at 0.1:0.1:0.7.
A dataset records its protocol in ``dataset.yaml`` (``tious``, chosen by ``jobs/make_dataset.py`` from the
annotation file's dialect and subset names); a config's ``eval.tious`` overrides it. Every job, report,
plot, Tune metric and ``jobs/compare.py`` uses the thresholds a run was evaluated at.
"""

from __future__ import annotations

from raytal.core.errors import InputError

THUMOS14 = (0.3, 0.4, 0.5, 0.6, 0.7)
ACTIVITYNET = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
WEAK_THUMOS14 = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MAX_TIOUS = 1000  # a threshold list is a handful of numbers; more is a typo (0:1e-12:1)


def parse_tious(text: str, what: str = "--tiou") -> list[float]:
    """``"0.3:0.1:0.7"`` (start:step:stop, inclusive) or ``"0.5,0.75"`` or ``"0.5"``; thresholds in [0, 1]."""
    bad = InputError(f"{what}: expected start:step:stop or a comma list of thresholds in [0, 1], got {text!r}")
    try:
        if ":" in text:
            start, step, stop = (float(x) for x in text.split(":"))
            if not (step > 0 and 0 <= stop - start <= MAX_TIOUS * step):  # NaN fails too
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            tious = [round(start + i * step, 10) for i in range(n)]
        else:
            tious = [float(x) for x in text.split(",")]
    except ValueError:
        raise bad from None
    if not all(0 <= t <= 1 for t in tious):
        raise bad
    return tious


def format_tious(tious) -> str:
    """``[0.3, 0.4, ..., 0.7]`` -> ``"0.3:0.1:0.7"`` when evenly spaced, else a comma list."""
    t = [float(x) for x in tious]
    if len(t) > 2:
        step = round(t[1] - t[0], 10)
        if step > 0 and all(abs((b - a) - step) < 1e-9 for a, b in zip(t, t[1:])):
            return f"{t[0]:g}:{step:g}:{t[-1]:g}"
    return ",".join(f"{x:g}" for x in t)


def protocol_for(subsets: list[str], official_dialect: bool) -> tuple[float, ...]:
    """The thresholds a converted annotation file's dataset is evaluated at: ActivityNet's for its official
    dialect (a taxonomy, no fps) or its subset names (training / validation / testing), else THUMOS14's."""
    if official_dialect or {"training", "validation"} <= set(subsets):
        return ACTIVITYNET
    return THUMOS14
