"""The embedded pose demo: synthetic front-facing stick figures with known COCO joints.

No download. Each image (`image_size` (H, W), 64x64 by default) holds one person facing the viewer:
a head disc with marks at the nose, eyes and ears, a torso, and arms and legs as thick anti-aliased
lines (upper limbs thicker than lower ones, so elbows and knees show where the width changes), hands
as discs at the wrists and feet pointing outwards from the ankles. Limb angles, proportions, lean,
head tilt, size (50-90% of the image height before fitting), position, colours (figure vs
background contrast), thickness, background gradient, clutter lines and blobs and pixel noise are
random. The 17 joints follow COCO's order; left and right are anatomical (the person's left limbs
are on the image's right) and are told apart by geometry only, never by colour: every left joint
lies to the right of its right partner and the pose distribution is mirror-symmetric, so a
horizontal flip with the `FLIP_PAIRS` swap is a valid augmentation and flip testing works.

Joint coordinates are in pixels with pixel centres at integers (pixel (i, j) is at x=j, y=i, as
`cv2.warpAffine` and the official top-down code assume). Whole figures stay inside the image, so
every joint has visibility 2. The box is the tight box of the joints enlarged by `BOX_MARGIN` of
its larger side on every side (so it holds the head and the hands), clipped to the image.

Figure `i` of a split is drawn from `np.random.default_rng([seed, split_id, i])`: deterministic,
independent of the order of loading, and the val stream differs from the train one. Train figures
are drawn on demand; the val set is drawn once and cached.

PCK@0.1 (`hrnet_flax.tasks.pose.pck`) is the demo's metric. Predicting the train figures' mean pose (relative to their
boxes) inside each val box scores 25%: the lean (up to 60 degrees), the bend, the limb angles and
the proportions vary enough that a model has to look at the figure. A small CNN on 64x48 top-down
crops reaches over 80% within a few minutes of CPU training.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from hrnet_flax.data.pose import PoseInstance, PoseSource

JOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_JOINTS = len(JOINT_NAMES)
FLIP_PAIRS = tuple((k, k + 1) for k in range(1, NUM_JOINTS, 2))
UPPER_BODY = tuple(range(11))
TRAIN_FIGURES = 4096
VAL_FIGURES = 256
BOX_MARGIN = 0.1  # the box grows by this fraction of the joint box's larger side on every side
VISIBLE = 2
_SPLIT_IDS = {"train": 0, "val": 1}
_MAX_TRIES = 64  # candidate poses before the fallback pose
_POSE_CANDIDATES = 16  # poses drawn at once (about a third are plausible)
_COLOUR_CANDIDATES = 16  # colour sets drawn at once (about half are apart enough)
# Left minus right x of the (eyes, ears, shoulders, ..., ankles) pairs at least, in statures: the
# head and the torso lean less than about 75 degrees, the limbs do not cross.
_PAIR_MARGINS = np.array([0.02, 0.05, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04])
_STATURE = (0.5, 0.9)  # the standing height, in image heights (smaller where the pose does not fit)
# Proportions in statures; "width" is the full width of the upper limbs.
_SHAPE = {
    "head": (0.09, 0.115),
    "neck": (0.02, 0.05),
    "torso": (0.22, 0.36),
    "shoulder": (0.09, 0.13),
    "hip": (0.05, 0.075),
    "upper_arm": (0.13, 0.21),
    "forearm": (0.12, 0.2),
    "thigh": (0.17, 0.27),
    "shin": (0.17, 0.26),
    "width": (0.055, 0.085),
    "foot": (0.05, 0.075),
}
# Angle ranges in degrees: the whole figure's lean, the torso's bend at the pelvis, the head's
# tilt; limbs from straight down, positive away from the body (elbow and knee relative to the
# upper limb). A leg is raised with probability `_RAISED_LEG`.
_ANGLES = {
    "lean": (-60, 60),
    "bend": (-35, 35),
    "tilt": (-25, 25),
    "arm": (-20, 180),
    "elbow": (-150, 150),
    "thigh": (-15, 60),
    "raised_thigh": (60, 110),
    "knee": (-140, 45),
}
_RAISED_LEG = 0.35
_SHAPE_BOUNDS = np.array(list(_SHAPE.values())).T
# Columns: lean, bend, tilt, then (left, right) arm, elbow, thigh, raised thigh, knee.
_ANGLE_BOUNDS = np.array(
    [_ANGLES[k] for k in ("lean", "bend", "tilt")]
    + [_ANGLES[k] for k in ("arm", "elbow", "thigh", "raised_thigh", "knee") for _ in range(2)],
    np.float64,
).T
# Face joints in head radii, head frame (x to the person's left, y down): nose, eyes, ears.
_FACE = np.array([0.15j, 0.4 - 0.22j, -0.4 - 0.22j, 0.98 - 0.05j, -0.98 - 0.05j])  # x + iy
_SIDES = np.array([1.0, -1.0])  # left (image +x), right


def _rotation(angle: float) -> np.ndarray:
    """The rotation matrix (2, 2) by `angle` radians (x towards y)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _directions(angles: np.ndarray) -> np.ndarray:
    """Unit vectors, as complex x + iy, for (left, right) angles (..., 2) from straight down (+y),
    positive away from the body."""
    return 1j * np.exp(-1j * _SIDES * angles)


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances from points p to segments a -> b, all complex x + iy (broadcast)."""
    d = b - a
    t = np.clip(np.real((p - a) * np.conj(d)) / np.maximum(np.abs(d) ** 2, 1e-12), 0.0, 1.0)
    return np.abs(p - a - t * d)


def _sample_pose(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Joints (17, 2) and the head centre (row 17) in statures (the standing height), pelvis at the
    origin, y down, and the figure's shape; the angles are redrawn until the pose is plausible."""
    low, high = _SHAPE_BOUNDS
    shape = dict(zip(_SHAPE, rng.uniform(low, high).tolist()))
    n = _POSE_CANDIDATES
    low, high = _ANGLE_BOUNDS
    for _ in range(_MAX_TRIES // n):
        draws = np.radians(rng.uniform(low, high, (n, len(low))))
        lean, bend, tilt = draws[:, :1], draws[:, 1:2], draws[:, 2:3]
        arm, elbow, thigh, raised_thigh, knee = (draws[:, k : k + 2] for k in range(3, 13, 2))
        raised = rng.random((n, 2)) < _RAISED_LEG
        joints = _pose_joints(shape, lean, bend, tilt, arm, elbow, np.where(raised, raised_thigh, thigh), knee)
        good = np.flatnonzero(_plausible(joints, shape))
        if len(good):
            shape["lean"] = float(lean[good[0], 0])
            pose = joints[good[0]]
            return np.stack([pose.real, pose.imag], -1), shape
    # A standing pose, always plausible.
    shape["lean"] = 0.0
    zero, spread = np.zeros((1, 2)), np.radians([[25.0, 25.0]])
    pose = _pose_joints(shape, zero[:, :1], zero[:, :1], zero[:, :1], spread, zero, spread / 2.5, zero)[0]
    return np.stack([pose.real, pose.imag], -1), shape


def _pose_joints(
    shape: dict[str, float],
    lean: np.ndarray,
    bend: np.ndarray,
    tilt: np.ndarray,
    arm: np.ndarray,
    elbow: np.ndarray,
    thigh: np.ndarray,
    knee: np.ndarray,
) -> np.ndarray:
    """Joints (T, 18) as complex x + iy of T candidate poses: the figure rotated by `lean` (T, 1),
    its torso bent by `bend` (T, 1) at the pelvis, its head tilted by `tilt` (T, 1); (left, right)
    limb angles (T, 2) from straight down, positive outwards, elbow and knee relative to the upper
    limb. Row 17 is the head's centre."""
    torso, head_frame = np.exp(1j * bend), np.exp(1j * (bend + tilt))
    hips = np.broadcast_to(_SIDES * shape["hip"] + 0j, arm.shape)
    neck = torso * (-1j * shape["torso"])
    shoulders = neck + torso * (_SIDES * shape["shoulder"])
    elbows = shoulders + torso * (shape["upper_arm"] * _directions(arm))
    wrists = elbows + torso * (shape["forearm"] * _directions(arm + elbow))
    knees = hips + shape["thigh"] * _directions(thigh)
    ankles = knees + shape["shin"] * _directions(thigh + knee)
    head = neck + head_frame * (-1j * (shape["neck"] + shape["head"]))
    face = head + head_frame * (shape["head"] * _FACE)
    limbs = np.stack([shoulders, elbows, wrists, hips, knees, ankles], 1).reshape(-1, 12)  # COCO's (left, right) order
    return np.concatenate([face, limbs, head], 1) * np.exp(1j * lean)


def _plausible(joints: np.ndarray, shape: dict[str, float]) -> np.ndarray:
    """(T,) bool for complex joints (T, 18): every left joint right (in image x) of its right
    partner, and the arms off the face."""
    apart = np.all(joints[:, 1:17:2].real - joints[:, 2:17:2].real >= _PAIR_MARGINS, -1)
    shoulders, elbows, wrists = joints[:, 5:7], joints[:, 7:9], joints[:, 9:11]
    starts = np.concatenate([shoulders + 0.4 * (elbows - shoulders), elbows], 1)  # upper arms start next to the ears
    ends = np.concatenate([elbows, wrists], 1)
    clearance = 1.3 * shape["head"] + 0.6 * shape["width"]
    return apart & np.all(_point_segment_distance(joints[:, 17:18], starts, ends) > clearance, -1)


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def _segments(a: np.ndarray, b: np.ndarray, half_width: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Coverage (n, P) of n thick segments at the P pixel centres xs, ys (P,)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    d = b - a
    dx, dy = d[:, :1], d[:, 1:]
    px, py = xs[None] - a[:, :1], ys[None] - a[:, 1:]
    t = px * dx
    t += py * dy
    t *= 1.0 / np.maximum(np.sum(d * d, -1, keepdims=True), 1e-12)
    np.clip(t, 0.0, 1.0, out=t)
    px -= t * dx
    py -= t * dy
    px *= px
    py *= py
    px += py
    np.sqrt(px, out=px)
    np.subtract(np.asarray(half_width, np.float32)[:, None] + 0.5, px, out=px)
    return np.clip(px, 0.0, 1.0, out=px)


def segment_coverage(a: np.ndarray, b: np.ndarray, half_width: np.ndarray, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1], float32 (n, height, width), of n thick segments a -> b
    ((n, 2) x, y in pixels, pixel centres at integers; a == b gives a disc) of half widths (n,)."""
    xs, ys = _grid(height, width)
    return _segments(a, b, half_width, xs.ravel(), ys.ravel()).reshape(-1, height, width)


def _polygon(vertices: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Coverage (P,) of a convex polygon (m, 2) at the pixel centres xs, ys (P,)."""
    v = np.asarray(vertices, np.float64)
    edges = v[np.arange(1, len(v) + 1) % len(v)] - v
    orientation = np.sign(np.sum(v[:, 0] * edges[:, 1] - v[:, 1] * edges[:, 0]))  # of the shoelace area
    normals = np.stack([edges[:, 1], -edges[:, 0]], -1) * (orientation / np.maximum(np.hypot(*edges.T), 1e-12))[:, None]
    offsets = np.sum(normals * v, -1)  # outward normals: inside where normal . p - offset < 0
    normals, offsets = normals.astype(np.float32), offsets.astype(np.float32)
    signed = xs[None] * normals[:, :1] + ys[None] * normals[:, 1:] - offsets[:, None]
    return np.clip(0.5 - signed.max(0), 0.0, 1.0)


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Background, torso, limb (and head) and mark colours, float32 (3,): the figure's well apart
    from the background, the torso's from the limbs'."""
    background, torso, limbs = np.moveaxis(rng.uniform(0.0, 1.0, (_COLOUR_CANDIDATES, 3, 3)), 1, 0)
    distance = lambda p, q: np.sqrt(np.sum((p - q) ** 2, -1))  # noqa: E731
    good = np.flatnonzero(
        (distance(torso, background) > 0.45) & (distance(limbs, background) > 0.45) & (distance(torso, limbs) > 0.3)
    )
    if len(good):
        background, torso, limbs = background[good[0]], torso[good[0]], limbs[good[0]]
    else:
        dark = background[0].mean() < 0.5
        background = np.full(3, 0.15 if dark else 0.85)
        torso, limbs = 1.0 - background, np.array([0.9, 0.6, 0.2] if dark else [0.1, 0.3, 0.6])
    marks = np.full(3, 0.08) if limbs.mean() > 0.5 else np.full(3, 0.95)
    return tuple(c.astype(np.float32) for c in (background, torso, limbs, marks))


def _draw_figure(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One figure: uint8 RGB (height, width, 3), joints (17, 2) in pixels and the figure's area."""
    pose, shape = _sample_pose(rng)
    # The drawn extent in statures: the joints with the widest limb parts, the head with its ears.
    pad = 0.8 * shape["width"] + shape["foot"]
    low = np.minimum(pose[:17].min(0) - pad, pose[17] - 1.4 * shape["head"])
    high = np.maximum(pose[:17].max(0) + pad, pose[17] + 1.4 * shape["head"])
    stature = rng.uniform(*_STATURE) * height
    stature = min(stature, (width - 3.0) / (high[0] - low[0]), (height - 3.0) / (high[1] - low[1]))
    room_low, room_high = 1.0 - low * stature, np.array([width - 2.0, height - 2.0]) - high * stature
    origin = rng.uniform(room_low, np.maximum(room_high, room_low))
    points = pose * stature + origin
    joints, head = points[:17], points[17]
    limb = max(shape["width"] * stature, 2.0)  # full width of the upper limbs, at least 2 px
    radius = shape["head"] * stature
    background, torso_colour, limb_colour, mark_colour = _colours(rng)

    # Background: a colour with a linear gradient, blobs and thin clutter lines.
    xs, ys = _grid(height, width)
    flat_x, flat_y = xs.ravel(), ys.ravel()
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (flat_x - width / 2) * np.cos(angle) + (flat_y - height / 2) * np.sin(angle)
    image = background[None] + (ramp * (rng.uniform(-0.3, 0.3) / max(height, width)))[:, None].astype(np.float32)
    blobs, lines = int(rng.integers(0, 4)), int(rng.integers(2, 7))
    size = np.array([width, height], np.float64)
    centres = rng.uniform(0, 1, (blobs, 2)) * size
    ends = rng.uniform(-0.1, 1.1, (lines, 2, 2)) * size
    half = np.concatenate([rng.uniform(1.5, 0.12 * min(height, width), blobs), rng.uniform(0.2, 0.7, lines)])
    clutter = _segments(np.concatenate([centres, ends[:, 0]]), np.concatenate([centres, ends[:, 1]]), half, flat_x, flat_y)
    clutter *= np.concatenate([rng.uniform(0.3, 0.7, blobs), rng.uniform(0.4, 0.9, lines)]).astype(np.float32)[:, None]
    # Overlapping clutter mixes its colours (weights summing to at most 1) instead of stacking.
    clutter /= np.maximum(clutter.sum(0), 1.0)
    image *= 1.0 - clutter.sum(0)[:, None]
    image += clutter.T @ rng.uniform(0, 1, (blobs + lines, 3)).astype(np.float32)

    # The figure, back to front: legs and feet, torso and neck, head and ears, face marks, arms and
    # hands. Each layer is a list of thick segments (start, end, half width; a disc has start == end)
    # in one colour.
    feet_direction = np.stack([_SIDES, np.full(2, 0.35)], -1) / np.hypot(1.0, 0.35)
    feet = joints[15:17] + shape["foot"] * stature * feet_direction @ _rotation(shape["lean"]).T
    across = (joints[11] - joints[12]) / max(float(np.linalg.norm(joints[11] - joints[12])), 1e-6)
    down = np.array([-across[1], across[0]])
    # The torso: shoulders to just outside and below the hips, where the thighs start.
    hip_corners = joints[11:13] + (np.outer(_SIDES, across) * 0.5 + down * 0.3) * limb
    torso = np.stack([joints[5], hip_corners[0], hip_corners[1], joints[6]])
    neck = (joints[5] + joints[6]) / 2
    mark = max(0.2 * radius, 0.6)
    both = np.ones(2)
    layers = [
        (
            [
                (joints[11:13], joints[13:15], 0.5 * limb * both),  # thighs
                (joints[13:15], joints[15:17], 0.4 * limb * both),  # shins
                (joints[15:17], feet, 0.35 * limb * both),
            ],
            limb_colour,
            None,
        ),
        ([(neck[None], head[None], np.array([0.45 * limb]))], torso_colour, torso),
        ([(head[None], head[None], np.array([radius])), (joints[3:5], joints[3:5], 0.3 * radius * both)], limb_colour, None),
        ([(joints[0:5], joints[0:5], mark * np.array([0.9, 1.0, 1.0, 0.8, 0.8]))], mark_colour, None),  # nose, eyes, ears
        (
            [
                (joints[5:7], joints[7:9], 0.5 * limb * both),  # upper arms
                (joints[7:9], joints[9:11], 0.4 * limb * both),  # forearms
                (joints[9:11], joints[9:11], 0.75 * limb * both),  # hands
            ],
            limb_colour,
            None,
        ),
    ]
    # All parts at once inside the figure's window, then composited layer by layer.
    starts, ends, half = (np.concatenate(column) for column in zip(*(part for parts, _, _ in layers for part in parts)))
    bounds = np.cumsum([0] + [sum(len(part[2]) for part in parts) for parts, _, _ in layers])
    low = np.minimum((np.minimum(starts, ends) - half[:, None]).min(0), torso.min(0))
    high = np.maximum((np.maximum(starts, ends) + half[:, None]).max(0), torso.max(0))
    x0, y0 = np.maximum(np.floor(low).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(high).astype(int) + 2, [width, height])
    window_x, window_y = xs[y0:y1, x0:x1].ravel(), ys[y0:y1, x0:x1].ravel()
    cover = _segments(starts, ends, half, window_x, window_y)
    canvas = image.reshape(height, width, 3)
    window = canvas[y0:y1, x0:x1].reshape(-1, 3)
    figure = np.zeros(len(window_x), np.float32)
    for (_, colour, polygon), first, last in zip(layers, bounds[:-1], bounds[1:]):
        coverage = cover[first:last].max(0)
        if polygon is not None:
            coverage = np.maximum(coverage, _polygon(polygon, window_x, window_y))
        window += coverage[:, None] * (colour - window)
        np.maximum(figure, coverage, out=figure)
    canvas[y0:y1, x0:x1] = window.reshape(y1 - y0, x1 - x0, 3)
    area = float(figure.sum())

    # Uniform pixel noise of standard deviation 0.01-0.05.
    image += (rng.random(image.shape, np.float32) - 0.5) * np.float32(np.sqrt(12.0) * rng.uniform(0.01, 0.05))
    image *= 255.0
    image += 0.5
    pixels = np.clip(image, 0, 255).astype(np.uint8).reshape(height, width, 3)
    return pixels, joints.astype(np.float64), area


def joint_box(joints: np.ndarray, height: int, width: int, margin: float = BOX_MARGIN) -> np.ndarray:
    """(x, y, w, h) float64: the tight box of the labelled joints (K, 3) (visibility > 0) enlarged by
    `margin` of its larger side on every side, clipped to the pixel centres of a height x width image."""
    joints = np.asarray(joints, np.float64)
    if joints.ndim != 2 or joints.shape[1] != 3:
        raise ValueError(f"joint_box: joints must be (K, 3), got shape {joints.shape}")
    visible = joints[joints[:, 2] > 0, :2]
    if not len(visible):
        raise ValueError("joint_box: no labelled joints (all visibilities 0)")
    low, high = visible.min(0), visible.max(0)
    grow = margin * float(np.max(high - low))
    low = np.maximum(low - grow, 0.0)
    high = np.minimum(high + grow, [width - 1.0, height - 1.0])
    return np.concatenate([low, high - low]).astype(np.float64)


def _check_image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 and s % 32 == 0 for s in size):
        raise ValueError(f"figures image_size must be (height, width), positive multiples of 32, got {image_size!r}")
    return int(size[0]), int(size[1])


class FiguresSource(PoseSource):
    """The stick-figure pose demo: `num_examples(split)` figures per split ("train", "val"), figure `i`
    a `PoseInstance` with image_id `i`."""

    num_joints = NUM_JOINTS
    flip_pairs = FLIP_PAIRS
    joint_names = JOINT_NAMES
    upper_body = UPPER_BODY

    def __init__(
        self,
        image_size: int | tuple[int, int] = (64, 64),
        *,
        seed: int = 0,
        train_size: int = TRAIN_FIGURES,
        val_size: int = VAL_FIGURES,
    ) -> None:
        self.image_size = _check_image_size(image_size)
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"figures seed must be a non-negative integer, got {seed!r}")
        for name, count in (("train_size", train_size), ("val_size", val_size)):
            if not isinstance(count, (int, np.integer)) or count <= 0:
                raise ValueError(f"figures {name} must be a positive integer, got {count!r}")
        self.seed, self.sizes = int(seed), {"train": int(train_size), "val": int(val_size)}

    def num_examples(self, split: str) -> int:
        """Figures in `split`."""
        return self.sizes[_check_split(split)]

    def load(self, split: str, index: int) -> PoseInstance:
        """Figure `index` of `split`."""
        self._check_index(split, index)
        if split == "val":
            images, joints, boxes, areas = _val_set(self.image_size, self.seed, self.sizes["val"])
            return PoseInstance(
                images[index].copy(), boxes[index].copy(), joints[index].copy(), image_id=int(index), area=float(areas[index]),
            )
        image, joints, box, area = _figure(self.image_size, self.seed, split, int(index))
        return PoseInstance(image, box, joints, image_id=int(index), area=area)

    def arrays(self, split: str, indices: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Figures `indices` (all of the split by default) stacked: uint8 images (N, H, W, 3),
        joints float64 (N, 17, 3) and boxes float64 (N, 4)."""
        indices = range(self.num_examples(split)) if indices is None else list(indices)
        for i in indices:
            self._check_index(split, i)
        if split == "val":
            images, joints, boxes, _ = _val_set(self.image_size, self.seed, self.sizes["val"])
            rows = np.asarray(indices, np.int64)
            return images[rows], joints[rows], boxes[rows]
        figures = [_figure(self.image_size, self.seed, split, int(i)) for i in indices]
        if not figures:
            h, w = self.image_size
            return np.zeros((0, h, w, 3), np.uint8), np.zeros((0, NUM_JOINTS, 3)), np.zeros((0, 4))
        return tuple(np.stack([f[k] for f in figures]) for k in range(3))

    def _check_index(self, split: str, index: int) -> None:
        count = self.num_examples(split)
        if not isinstance(index, (int, np.integer)) or not 0 <= index < count:
            raise ValueError(f"figures {split} index must be an integer in [0, {count}), got {index!r}")


def _check_split(split: str) -> str:
    if split not in _SPLIT_IDS:
        raise ValueError(f"figures split {split!r}: must be 'train' or 'val'")
    return split


def _figure(
    image_size: tuple[int, int], seed: int, split: str, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Figure `index` of `split`: image, joints (17, 3), box (4,), area."""
    height, width = image_size
    image, points, area = _draw_figure(np.random.default_rng([seed, _SPLIT_IDS[split], index]), height, width)
    joints = np.concatenate([points, np.full((NUM_JOINTS, 1), float(VISIBLE))], -1)
    return image, joints, joint_box(joints, height, width), area


@functools.lru_cache(maxsize=4)
def _val_set(image_size: tuple[int, int], seed: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    figures = [_figure(image_size, seed, "val", i) for i in range(count)]
    arrays = tuple(np.stack([f[k] for f in figures]) for k in range(4))
    for array in arrays:
        array.flags.writeable = False
    return arrays
