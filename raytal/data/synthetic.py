"""Synthetic snippet features on real (or generated) action timelines: the benchmark data
(docs/design.md §3 "Benchmark data").

No real video features can be downloaded here, so the benchmark keeps the *temporal structure* of a real
annotation file (durations, instance counts, boundaries, classes, co-occurrence) and synthesizes the
features. The generative model, for a video with T snippets:

Signals live in a latent space of L dims (``latent_dim``) and are mapped to the D feature dims by a fixed
matrix M [D, L] with orthonormal columns, plus a little isotropic noise in D (so features are full rank).
Working in L << D dims keeps noise relevant: isotropic noise in D dims barely touches any class
direction, which would make the data trivially separable.

World (built once from ``seed`` and the class list):
* Scene groups: classes that co-occur in >= 2 videos of the timelines are joined (union-find, e.g.
  CricketBowling+CricketShot, CliffDiving+Diving); the remaining classes form seeded random groups of 3.
  Each group g has a unit scene vector S_g (the "sports field" shared by related classes).
* Confusable pairs: within each group the classes are paired (seeded). A pair shares a vector h:
  P_c = unit(sqrt(share)*h + sqrt(1-share)*g_c), so cos(P_a, P_b) ~ share, share = 1 - 0.4**difficulty.
* Phases: each class has start/middle/end prototypes P_c,k = unit(P_c + 0.7*q_c,k) (k = 0, 1, 2).
* A generic background vector B.

Per video (its own random stream, so one video's features do not depend on the others):
* Instance i of class c on grid positions [s_i, e_i] (``raytal.core.grid.seconds_to_grid``): membership
  m_i(t) = sigmoid((t - s_i)/w) * sigmoid((e_i - t)/w), w = 0.25 + 0.5*difficulty snippets
  (blurred boundaries: features ramp over a few snippets). Phase position u = clip((t - s_i)/(e_i - s_i),
  0, 1) gives triangular weights start = max(0, 1 - 2u), middle = 1 - |2u - 1|, end = max(0, 2u - 1).
  Action term: sum_i a_i * m_i(t) * sum_k weight_k(t) * (P_c,k + v_i), with instance amplitude
  a_i ~ U(0.7, 1.3) and an instance-specific variation v_i ~ N(0, (0.15*difficulty)^2 I_L).
* Scene context: 0.5*S_(video's main class group) everywhere, plus 0.5*S_group(c_i) * n_i(t), where n_i
  is the instance's membership widened by max(its length, 4 snippets) on both sides (context is also in
  the background around the action, so context alone does not find the boundaries).
* Background: 0.5*B * (1 - min(sum_i m_i(t), 1)).
* Distractors (hard negatives): Poisson(T/64) short bursts (2-6 snippets) of the middle prototype of a
  class of the video's scene group at amplitude 0.3*min(difficulty, 3), not annotated.
* Per-video domain shift: a constant vector ~ N(0, (0.15*difficulty)^2 I_L) and a gain exp(N(0, 0.1*difficulty)).
* Noise: white N(0, (0.3*difficulty)^2) plus AR(1) (rho = 0.9) temporally correlated noise of std
  0.2*difficulty, per latent dim; then N(0, 0.05^2) per feature dim after the map to D.

The one knob, ``difficulty`` (>= 0, default 1), scales noise, confusion (share), blur, intra-class
variation, distractors and domain shift together; each grows monotonically with it. Everything is drawn
from ``numpy.random.default_rng`` streams of ``seed`` (world: [seed, 0]; video j of a file: [seed, 1, j];
streamed video j: [seed, 2, j]; generated timelines: [seed, 3]), so the same seed gives identical bytes.
The number of snippets is the number of full clips: T = floor((duration*fps - num_frames)/feat_stride) + 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from raytal.core.grid import seconds_to_grid
from raytal.data.splits import video_level_labels
from raytal.core.video import Video

WORLD_STREAM, VIDEO_STREAM, STREAMED_STREAM, TIMELINE_STREAM = 0, 1, 2, 3


def num_snippets(duration: float, fps: float, feat_stride: int, num_frames: int) -> int:
    """Number of full clips of ``num_frames`` frames at step ``feat_stride`` in the video (>= 1)."""
    frames = duration * fps
    return max(1, int(np.floor((frames - num_frames) / feat_stride)) + 1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def scene_groups(num_classes: int, class_sets: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Group id per class [C]: co-occurring classes (>= 2 videos) joined, the rest in random triples."""
    parent = np.arange(num_classes)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return int(a)

    pair_count: dict[tuple[int, int], int] = {}
    for s in class_sets:
        s = np.unique(s)
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                key = (int(s[i]), int(s[j]))
                pair_count[key] = pair_count.get(key, 0) + 1
    for (a, b), n in sorted(pair_count.items()):
        if n >= 2:
            parent[find(a)] = find(b)
    roots = np.array([find(c) for c in range(num_classes)])
    sizes = np.bincount(roots, minlength=num_classes)
    group = np.full(num_classes, -1, dtype=np.int64)
    next_id = 0
    for r in np.unique(roots):
        if sizes[r] > 1:
            group[roots == r] = next_id
            next_id += 1
    singles = rng.permutation(np.flatnonzero(group < 0))
    for start in range(0, len(singles), 3):
        chunk = singles[start : start + 3]
        if len(chunk) == 1 and start > 0:  # never leave a class alone in its scene
            group[chunk] = next_id - 1
        else:
            group[chunk] = next_id
            next_id += 1
    return group


@dataclass
class World:
    """Fixed generative structure of one synthetic dataset (see the module docstring)."""

    num_classes: int
    feature_dim: int
    latent_dim: int
    difficulty: float
    group: np.ndarray  # [C] scene group per class
    partner: np.ndarray  # [C] confusable partner class, -1 if none
    phases: np.ndarray  # [C, 3, L] start/middle/end prototypes
    scenes: np.ndarray  # [G, L]
    background: np.ndarray  # [L]
    mapping: np.ndarray  # [D, L] orthonormal columns

    @property
    def share(self) -> float:
        return 1.0 - 0.4**self.difficulty


def make_world(
    num_classes: int,
    feature_dim: int,
    class_sets: list[np.ndarray],
    seed: int,
    difficulty: float = 1.0,
    latent_dim: int | None = None,
) -> World:
    """Build prototypes, scene groups and confusable pairs from the seed and the class co-occurrence."""
    if num_classes < 1 or feature_dim < 2:
        raise ValueError(f"need num_classes >= 1 and feature_dim >= 2, got {num_classes}, {feature_dim}")
    if not difficulty >= 0:
        raise ValueError(f"difficulty must be >= 0, got {difficulty}")
    L = int(latent_dim or min(feature_dim, 24))
    if not 2 <= L <= feature_dim:
        raise ValueError(f"latent_dim must be in [2, feature_dim={feature_dim}], got {L}")
    rng = np.random.default_rng([seed, WORLD_STREAM])
    group = scene_groups(num_classes, class_sets, rng)
    partner = np.full(num_classes, -1, dtype=np.int64)
    for g in np.unique(group):
        members = rng.permutation(np.flatnonzero(group == g))
        for a, b in zip(members[0::2], members[1::2]):
            partner[a], partner[b] = b, a
    share = 1.0 - 0.4**difficulty
    own = _unit(rng.standard_normal((num_classes, L)))
    shared = _unit(rng.standard_normal((num_classes, L)))
    # A pair uses the shared vector of its lower class id.
    pair_root = np.where(partner >= 0, np.minimum(np.arange(num_classes), partner), np.arange(num_classes))
    base = _unit(np.sqrt(share) * shared[pair_root] + np.sqrt(1.0 - share) * own)
    phases = _unit(base[:, None, :] + 0.7 * _unit(rng.standard_normal((num_classes, 3, L))))
    scenes = _unit(rng.standard_normal((int(group.max()) + 1, L)))
    background = _unit(rng.standard_normal(L))
    q, _ = np.linalg.qr(rng.standard_normal((feature_dim, L)))
    return World(num_classes, feature_dim, L, float(difficulty), group, partner, phases, scenes, background, q)


def synthesize(
    world: World, video: Video, rng: np.random.Generator, return_labels: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Features float32 [T, D] for one video's timeline (see the module docstring).

    With ``return_labels`` also the per-snippet class [T] (int64; -1 = background, else the class with
    the largest membership when it is > 0.5), used for the feature statistics.
    """
    x = world.difficulty
    L = world.latent_dim
    T = num_snippets(video.duration, video.fps, video.feat_stride, video.num_frames)
    t = np.arange(T, dtype=np.float64)[None, :]  # [1, T]
    segs = np.asarray(video.segments, dtype=np.float64).reshape(-1, 2)
    cls = np.asarray(video.labels, dtype=np.int64)
    N = len(cls)
    g = seconds_to_grid(segs, video.fps, video.feat_stride, video.num_frames)  # [N, 2] grid positions
    s, e = g[:, :1], g[:, 1:]
    w = 0.25 + 0.5 * x
    memb = _sigmoid((t - s) / w) * _sigmoid((e - t) / w)  # [N, T]
    u = np.clip((t - s) / np.maximum(e - s, 1e-6), 0.0, 1.0)
    phase_w = np.stack([np.maximum(0.0, 1 - 2 * u), 1 - np.abs(2 * u - 1), np.maximum(0.0, 2 * u - 1)], -1)
    amp = rng.uniform(0.7, 1.3, size=N)
    protos = world.phases[cls] + (0.15 * x / np.sqrt(L)) * rng.standard_normal((N, 1, L))  # [N, 3, L]
    z = np.einsum("nt,ntk,nkd->td", memb * amp[:, None], phase_w, protos)  # [T, L]

    # Scene context: whole video, stronger around each action.
    if N:
        main = int(np.bincount(cls, minlength=world.num_classes).argmax())
        main_group = world.group[main]
    else:
        main_group = int(rng.integers(len(world.scenes)))
    z += 0.5 * world.scenes[main_group]
    if N:
        pad = np.maximum(e - s, 4.0)
        near = _sigmoid((t - (s - pad)) / (3 * w)) * _sigmoid(((e + pad) - t) / (3 * w))  # [N, T]
        z += 0.5 * near.T @ world.scenes[world.group[cls]]
    total = memb.sum(axis=0) if N else np.zeros(T)
    z += 0.5 * (1.0 - np.minimum(total, 1.0))[:, None] * world.background

    # Distractors: unannotated bursts of a related class's middle phase.
    n_burst = int(rng.poisson(T / 64.0))
    if n_burst and x > 0:
        related = np.flatnonzero(world.group == main_group)
        bc = rng.choice(related, size=n_burst)
        bs = rng.uniform(0, T, size=n_burst)[:, None]
        bl = rng.uniform(2, 6, size=n_burst)[:, None]
        bm = _sigmoid((t - bs) / w) * _sigmoid((bs + bl - t) / w)  # [B, T]
        z += 0.3 * min(x, 3.0) * bm.T @ world.phases[bc, 1]

    # Domain shift and noise.
    gain = np.exp(0.1 * x * rng.standard_normal())
    shift = (0.15 * x / np.sqrt(L)) * rng.standard_normal(L)
    white = (0.3 * x / np.sqrt(L)) * rng.standard_normal((T, L))
    rho = 0.9
    innov = (0.2 * x / np.sqrt(L)) * np.sqrt(1 - rho**2) * rng.standard_normal((T, L))
    innov[0] /= np.sqrt(1 - rho**2)  # start the AR(1) process in its stationary distribution
    corr = lfilter([1.0], [1.0, -rho], innov, axis=0)
    z = gain * z + shift + white + corr
    feats = z @ world.mapping.T + (0.05 / np.sqrt(world.feature_dim)) * rng.standard_normal((T, world.feature_dim))
    feats = feats.astype(np.float32)
    if not return_labels:
        return feats
    labels = np.full(T, -1, dtype=np.int64)
    if N:
        best = memb.argmax(axis=0)
        on = memb[best, np.arange(T)] > 0.5
        labels[on] = cls[best[on]]
    return feats, labels


# ------------------------------------------------------------------------------------- timelines


def tiny_timelines(
    seed: int,
    num_videos: int = 48,
    classes: tuple[str, ...] = ("Jump", "Throw", "Swing", "Dive", "Lift"),
    test_fraction: float = 1 / 3,
    fps: float = 30.0,
    feat_stride: int = 16,
    num_frames: int = 16,
) -> tuple[list[str], list[Video]]:
    """Seeded timelines of the ``tiny`` preset: short videos (20-60 s), 1-4 instances of 1.5-6 s of a
    main class (balanced over videos) and, in 30 % of videos, one of a second class; subsets train/test."""
    rng = np.random.default_rng([seed, TIMELINE_STREAM])
    C = len(classes)
    mains = rng.permutation(np.arange(num_videos) % C)
    n_test = int(round(test_fraction * num_videos))
    is_test = np.zeros(num_videos, dtype=bool)
    is_test[rng.permutation(num_videos)[:n_test]] = True
    videos = []
    for j in range(num_videos):
        duration = round(float(rng.uniform(20, 60)), 2)
        n = int(rng.integers(1, 5))
        labels = np.full(n, mains[j])
        if rng.random() < 0.3:
            n += 1
            labels = np.append(labels, (mains[j] + 1 + rng.integers(C - 1)) % C)
            labels = rng.permutation(labels)
        lengths = rng.uniform(1.5, 6.0, size=n)
        free = duration - lengths.sum() - 1.0
        gaps = rng.dirichlet(np.ones(n + 1)) * free
        starts = 0.5 + np.cumsum(gaps[:-1]) + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        segs = np.round(np.stack([starts, starts + lengths], axis=1), 2)
        videos.append(
            Video(
                video_id=f"tiny_{'test' if is_test[j] else 'train'}_{j:03d}",
                subset="test" if is_test[j] else "train",
                duration=duration,
                fps=fps,
                feat_stride=feat_stride,
                num_frames=num_frames,
                segments=segs,
                labels=labels.astype(np.int64),
            )
        )
    return list(classes), videos


def synthesize_video(world: World, video: Video, seed: int, index: int) -> tuple[Video, np.ndarray]:
    """(copy of ``video`` with features, per-snippet labels [T]); ``index`` = the video's position in
    its annotation file, which picks its random stream [seed, 1, index]."""
    rng = np.random.default_rng([seed, VIDEO_STREAM, index])
    feats, labels = synthesize(world, video, rng, return_labels=True)
    return dataclasses.replace(video, features=feats), labels


def generate(world: World, videos: list[Video], seed: int) -> Iterator[Video]:
    """Yield each timeline with its synthetic features; video j of the list uses stream [seed, 1, j]."""
    for j, v in enumerate(videos):
        yield synthesize_video(world, v, seed, j)[0]


def stream_unlabeled(
    world: World,
    templates: list[Video],
    count: int,
    seed: int,
    subset: str = "unlabeled",
    prefix: str = "unl_",
) -> Iterator[Video]:
    """Yield ``count`` unlabeled videos, one at a time (memory does not grow with ``count``).

    Video j copies the timeline of a random template (stream [seed, 2, j]) stretched in time by a factor
    U(0.8, 1.25); its segments stay in the record (``labeled=False``) for pseudo-label quality metrics.
    """
    if not templates:
        raise ValueError("stream_unlabeled: no template timelines")
    for j in range(count):
        rng = np.random.default_rng([seed, STREAMED_STREAM, j])
        tpl = templates[int(rng.integers(len(templates)))]
        k = float(rng.uniform(0.8, 1.25))
        v = Video(
            video_id=f"{prefix}{j:07d}",
            subset=subset,
            duration=tpl.duration * k,
            fps=tpl.fps,
            feat_stride=tpl.feat_stride,
            num_frames=tpl.num_frames,
            segments=tpl.segments * k,
            labels=tpl.labels.copy(),
            labeled=False,
        )
        v.features = synthesize(world, v, rng)  # type: ignore[assignment]
        yield v


# ------------------------------------------------------------------------------------ statistics


def feature_statistics(
    feats: list[np.ndarray], labels: list[np.ndarray], classes: list[str], max_snippets: int = 200_000, seed: int = 0
) -> dict:
    """Per-class separability of snippet features (features centred on the global mean).

    For class c (and background, -1): n snippets; within = RMS distance of its snippets to the class
    mean; nearest = the other class whose mean has the largest cosine with c's mean, and that cosine;
    ncm_acc = fraction of c's snippets whose nearest class mean (background included) is c's.
    Overall: mean within-class distance, mean distance between class means, NCM accuracy.
    """
    X = np.concatenate(feats).astype(np.float64)
    y = np.concatenate(labels)
    if len(y) > max_snippets:  # the statistics need a sample, not every snippet
        keep = np.random.default_rng(seed).choice(len(y), max_snippets, replace=False)
        X, y = X[keep], y[keep]
    X -= X.mean(axis=0)
    ids = np.array([-1] + list(range(len(classes))))
    present = np.array([np.any(y == c) for c in ids])
    ids = ids[present]
    means = np.stack([X[y == c].mean(axis=0) for c in ids])
    sq = (X**2).sum(1)[:, None] - 2 * X @ means.T + (means**2).sum(1)[None, :]
    pred = ids[sq.argmin(axis=1)]
    unit = _unit(means)
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    rows = []
    for a, c in enumerate(ids):
        sel = y == c
        within = float(np.sqrt(((X[sel] - means[a]) ** 2).sum(1).mean()))
        others = np.flatnonzero(ids >= 0) if c >= 0 else np.array([], dtype=int)
        others = others[others != a]
        if len(others):
            b = others[cos[a, others].argmax()]
            near, near_cos = classes[ids[b]], float(cos[a, b])
        else:
            near, near_cos = "-", float("nan")
        rows.append(
            {
                "class": "background" if c < 0 else classes[c],
                "n": int(sel.sum()),
                "within": within,
                "nearest": near,
                "nearest_cos": near_cos,
                "ncm_acc": float((pred[sel] == c).mean()),
            }
        )
    act = ids >= 0
    diff = means[act][:, None, :] - means[act][None, :, :]
    k = int(act.sum())
    between = float(np.sqrt((diff**2).sum(-1))[~np.eye(k, dtype=bool)].mean()) if k > 1 else float("nan")
    within_mean = float(np.mean([r["within"] for r in rows if r["class"] != "background"]))
    return {"per_class": rows, "within": within_mean, "between": between, "ncm_acc": float((pred == y).mean())}


def format_statistics(stats: dict) -> str:
    """A fixed-width table of ``feature_statistics`` for the console."""
    lines = [f"{'class':<20} {'snippets':>8} {'within':>7} {'nearest other class':<20} {'cos':>6} {'NCM acc':>7}"]
    for r in stats["per_class"]:
        lines.append(
            f"{r['class']:<20} {r['n']:>8d} {r['within']:>7.3f} {r['nearest']:<20} "
            f"{r['nearest_cos']:>6.3f} {r['ncm_acc']:>7.3f}"
        )
    lines.append(
        f"mean within-class distance {stats['within']:.3f}, mean between-class-mean distance "
        f"{stats['between']:.3f}, nearest-class-mean snippet accuracy {stats['ncm_acc']:.3f}"
    )
    return "\n".join(lines)


def class_sets_of(videos: list[Video]) -> list[np.ndarray]:
    """Distinct classes per video (for scene groups)."""
    return [video_level_labels(v) for v in videos]
