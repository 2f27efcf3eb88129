"""Keypoint geometry and heatmap codecs: person boxes to crop centres and scales, the crop affine
transforms, Gaussian heatmap targets, and heatmap decoding (MSRA and UDP).

Conventions. Sizes are (height, width); points are (x, y) in pixels with pixel centres at integers.
A crop is given by `center` (x, y) and `scale` (sx, sy) in units of `PIXEL_STD` pixels, as in the
official deep-high-resolution-net code. Two codecs:

- "msra" (the official code and mmpose's `MSRAHeatmap`): the crop affine of `crop_transform`, a
  Gaussian centred on the joint rounded to the heatmap grid (stride input / heatmap), decoded by
  the arg-max plus a quarter pixel toward the larger neighbour, and mapped back with the inverse
  crop affine of the heatmap size.
- "udp" (mmpose's `UDPHeatmap` with `TopdownAffine(use_udp=True)`): the box edges map to the first
  and last pixel centres (`udp_transform`), the heatmap grid is the input grid times
  (heatmap - 1) / (input - 1), the Gaussian is centred at the exact sub-pixel joint, and decoding
  refines the arg-max with one Newton step on the log of the blurred heatmap (DARK-UDP).

Geometry runs in numpy float64 on the host; decoding and flipping heatmaps run in jax.numpy (on the
device, inside a jitted evaluation step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

PIXEL_STD = 200.0  # the official code's unit of box scale: scale = size / 200
BOX_PADDING = 1.25  # the official crop is the aspect-corrected box enlarged by this factor
HALF_BODY_PADDING = 1.5  # the official half-body box is enlarged by this factor
CODECS = ("msra", "udp")
UDP_LOG_CLIP = (1e-3, 50.0)  # mmpose clips the blurred heatmap to this range before the log


def box_to_center_scale(
    box: np.ndarray, aspect_ratio: float, padding: float = BOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """`(center (2,), scale (2,))` of a person box (x, y, w, h), as the official `_xywh2cs`: the box
    widened or heightened to `aspect_ratio` (crop width / height), scale in units of `PIXEL_STD`
    pixels, times `padding`. float64."""
    x, y, w, h = (float(v) for v in np.asarray(box, np.float64)[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], np.float64) * padding
    return center, scale


# ------------------------------------------------------------------ checks


def check_size(size: Sequence[int], name: str) -> tuple[int, int]:
    """`(height, width)` of `size`, both positive integers."""
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} {size!r} must be (height, width)") from e
    if h <= 0 or w <= 0 or (h, w) != tuple(size):
        raise ValueError(f"{name} {tuple(size)} must be (height, width), two positive integers")
    return h, w


def check_codec(codec: str) -> str:
    """`codec` if it is one of `CODECS`."""
    if codec not in CODECS:
        raise ValueError(f"unknown heatmap codec {codec!r}; use one of {', '.join(CODECS)}")
    return codec


def _vector2(value: np.ndarray | float | Sequence[float], name: str) -> np.ndarray:
    """float64 (2,) from a pair (or, for a scale, one number used for both axes)."""
    v = np.asarray(value, np.float64)
    if v.ndim == 0:
        v = np.array([v, v])
    if v.shape != (2,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be two finite numbers (x, y), got {value!r}")
    return v


def _check_joints(joints: np.ndarray) -> np.ndarray:
    """float64 (K, 3) joints: x, y, visibility."""
    j = np.asarray(joints, np.float64)
    if j.ndim != 2 or j.shape[1] != 3:
        raise ValueError(f"joints must have shape (K, 3) (x, y, visibility), got {j.shape}")
    return j


# ------------------------------------------------------------------ affine transforms


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a - b` turned 90 degrees about `b` (the third point of the official 3-point affine)."""
    d = a - b
    return b + np.array([-d[1], d[0]])


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) float64 affine that maps the three points `src` (3, 2) onto `dst` (3, 2)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    a = np.concatenate([src, np.ones((3, 1))], axis=1)
    if abs(np.linalg.det(a)) < 1e-12 * max(1.0, float(np.abs(src).max()) ** 2):
        raise ValueError(f"the points {src.tolist()} are collinear: no affine transform maps them")
    return np.linalg.solve(a, dst).T


def crop_transform(
    center: np.ndarray,
    scale: np.ndarray | float,
    rotation: float,
    output_size: Sequence[int],
    shift: Sequence[float] = (0.0, 0.0),
    inverse: bool = False,
) -> np.ndarray:
    """(2, 3) float64 affine from the image to a crop of `output_size` (h, w), as the official
    `get_affine_transform`: `center` goes to the crop centre (w/2, h/2), `scale[0] * PIXEL_STD` image
    pixels span the crop width (one factor for both axes), the image turned by `rotation` degrees;
    `shift` moves the centre by a fraction of the scaled box. `inverse`: crop to image."""
    c = _vector2(center, "center")
    s = _vector2(scale, "scale") * PIXEL_STD
    h, w = check_size(output_size, "output_size")
    if s[0] <= 0:
        raise ValueError(f"scale must be positive, got {np.asarray(scale).tolist()}")
    shift_ = _vector2(shift, "shift")
    angle = math.radians(float(rotation))
    sn, cs = math.sin(angle), math.cos(angle)
    # the vector (0, -s_w/2) turned by the rotation maps to (0, -w/2)
    src_dir = np.array([s[0] * 0.5 * sn, -s[0] * 0.5 * cs])
    dst_dir = np.array([0.0, -w * 0.5])
    src = np.zeros((3, 2))
    dst = np.zeros((3, 2))
    src[0] = c + s * shift_
    src[1] = src[0] + src_dir
    dst[0] = (w * 0.5, h * 0.5)
    dst[1] = dst[0] + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return affine_from_points(dst, src) if inverse else affine_from_points(src, dst)


def udp_transform(center: np.ndarray, scale: np.ndarray | float, rotation: float, output_size: Sequence[int]) -> np.ndarray:
    """(2, 3) float64 affine from the image to a crop of `output_size` (h, w) under UDP (mmpose's
    `get_udp_warp_matrix`): the box `center ± scale * PIXEL_STD / 2` maps onto the pixel centres
    0..w-1 and 0..h-1 (a factor per axis), turned by `rotation` degrees about the centre (mmpose's
    UDP turns the opposite way to `crop_transform`)."""
    c = _vector2(center, "center")
    s = _vector2(scale, "scale") * PIXEL_STD
    h, w = check_size(output_size, "output_size")
    if np.any(s <= 0):
        raise ValueError(f"scale must be positive, got {np.asarray(scale).tolist()}")
    angle = math.radians(float(rotation))
    sn, cs = math.sin(angle), math.cos(angle)
    rot = np.array([[cs, -sn], [sn, cs]])
    factor = np.array([(w - 1) / s[0], (h - 1) / s[1]])
    linear = factor[:, None] * rot
    return np.concatenate([linear, (factor * (0.5 * s) - linear @ c)[:, None]], axis=1)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """float64 `points` (..., 2) mapped by the (2, 3) affine `matrix`."""
    p = np.asarray(points, np.float64)
    m = np.asarray(matrix, np.float64)
    if p.shape[-1:] != (2,) or m.shape != (2, 3):
        raise ValueError(f"transform_points needs points (..., 2) and a (2, 3) matrix, got {p.shape} and {m.shape}")
    return p @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """(2, 3) float64 inverse of the affine `matrix`."""
    m = np.asarray(matrix, np.float64)
    full = np.concatenate([m, [[0.0, 0.0, 1.0]]])
    if abs(np.linalg.det(full)) < 1e-300:
        raise ValueError(f"the affine matrix {m.tolist()} is singular")
    return np.linalg.inv(full)[:2]


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size: Sequence[int]) -> np.ndarray:
    """float32 (h, w, C) crop of `image` (H, W[, C], uint8 or float) under the image-to-crop affine
    `matrix`: bilinear, 0 outside the image (cv2.warpAffine with INTER_LINEAR and a constant-0
    border, but with exact weights where OpenCV rounds positions to 1/32 pixel)."""
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"warp_image needs an (H, W) or (H, W, C) image, got shape {img.shape}")
    h, w = check_size(output_size, "output_size")
    inv = invert_affine(matrix)
    height, width = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    finite = np.isfinite(sx) & np.isfinite(sy)
    sx = np.where(finite & (sx > -2) & (sx < width + 1), sx, -2.0)  # far outside: every corner is border
    sy = np.where(finite & (sy > -2) & (sy < height + 1), sy, -2.0)
    x0, y0 = np.floor(sx).astype(np.intp), np.floor(sy).astype(np.intp)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    extra = (slice(None),) * 2 + (None,) * (img.ndim - 2)
    out = np.zeros((h, w, *img.shape[2:]), np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            values = img[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)].astype(np.float32)
            out += values * (wx * wy * inside)[extra]
    return out


# ------------------------------------------------------------------ flips and half body


def _flip_permutation(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """Joint order after a horizontal flip: each pair swapped."""
    perm = np.arange(num_joints)
    for pair in flip_pairs:
        a, b = (int(i) for i in pair)
        if not (0 <= a < num_joints and 0 <= b < num_joints):
            raise ValueError(f"flip pair {tuple(pair)} out of range for {num_joints} joints")
        perm[a], perm[b] = b, a
    return perm


def flip_joints(joints: np.ndarray, width: int, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """float64 (K, 3) joints of the image flipped horizontally (official `fliplr_joints`): x ->
    width - 1 - x, each pair swapped (with its visibility); unlabelled joints get x = y = 0."""
    j = _check_joints(joints).copy()
    j[:, 0] = width - 1 - j[:, 0]
    j = j[_flip_permutation(len(j), flip_pairs)]
    j[j[:, 2] <= 0, :2] = 0.0
    return j


def flip_heatmaps(heatmaps: jnp.ndarray, flip_pairs: Sequence[Sequence[int]], shift: bool = True) -> jnp.ndarray:
    """Heatmaps (N, h, w, K) of flipped inputs brought back to the unflipped frame (official flip
    test): width reversed, paired channels swapped, and with `shift` moved right by one pixel
    (column 0 kept), which the MSRA codec needs and UDP does not."""
    hm = jnp.asarray(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"flip_heatmaps needs (N, h, w, K) heatmaps, got shape {hm.shape}")
    hm = hm[:, :, ::-1, :][..., _flip_permutation(hm.shape[-1], flip_pairs)]
    if shift:
        hm = jnp.concatenate([hm[:, :, :1], hm[:, :, :-1]], axis=2)
    return hm


def half_body_box(
    joints: np.ndarray, upper_body: Sequence[int], aspect_ratio: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """`(center, scale)` float64 of the official half-body crop: the labelled joints of the upper
    body (`upper_body` indices; chosen when a normal draw is below 0.5 and it has more than 2
    labelled joints) or of the rest (when it has more than 2, else the upper body), their mean as
    centre, their extent corrected to `aspect_ratio` and enlarged 1.5x. None when fewer than 2
    joints are chosen or they all coincide."""
    j = _check_joints(joints)
    labelled = j[:, 2] > 0
    upper = np.zeros(len(j), bool)
    upper[[int(i) for i in upper_body]] = True
    upper_joints, lower_joints = j[labelled & upper, :2], j[labelled & ~upper, :2]
    if rng.standard_normal() < 0.5 and len(upper_joints) > 2:
        chosen = upper_joints
    else:
        chosen = lower_joints if len(lower_joints) > 2 else upper_joints
    if len(chosen) < 2:
        return None
    center = chosen.mean(axis=0)
    w, h = chosen.max(axis=0) - chosen.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    if w <= 0 or h <= 0:
        return None
    return center, np.array([w, h]) / PIXEL_STD * HALF_BODY_PADDING


# ------------------------------------------------------------------ targets


def _check_target_args(joints, image_size, heatmap_size, sigma):
    j = _check_joints(joints)
    size = check_size(image_size, "image_size")
    hm = check_size(heatmap_size, "heatmap_size")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return j, size, hm


def msra_heatmaps(
    joints: np.ndarray, image_size: Sequence[int], heatmap_size: Sequence[int], sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """`(target (h, w, K) float32, weight (K,) float32)` of joints (K, 3) in crop pixels, as the
    official `generate_target`: a peak-1 Gaussian centred at `int(x / stride + 0.5)` (truncated),
    drawn within 3 sigma; weight 1 for labelled joints (visibility > 0), 0 for unlabelled ones and
    for joints whose window misses the heatmap. (Where 3 sigma is not an integer, the official
    window arithmetic truncates toward zero, which moves a peak near the top/left edge by a
    pixel; that is kept.)"""
    j, (in_h, in_w), (h, w) = _check_target_args(joints, image_size, heatmap_size, sigma)
    stride = np.array([in_w / w, in_h / h])
    radius = sigma * 3
    size = 2 * radius + 1
    g = np.arange(0, size, 1, np.float32)
    patch_center = size // 2
    patch = np.exp(-((g[None, :] - patch_center) ** 2 + (g[:, None] - patch_center) ** 2) / (2 * sigma**2))
    target = np.zeros((len(j), h, w), np.float32)
    weight = (j[:, 2] > 0).astype(np.float32)
    for k in range(len(j)):
        if weight[k] == 0:
            continue
        mu_x, mu_y = (int(v) for v in j[k, :2] / stride + 0.5)
        left, top = int(mu_x - radius), int(mu_y - radius)
        right, bottom = int(mu_x + radius + 1), int(mu_y + radius + 1)
        if left >= w or top >= h or right < 0 or bottom < 0:
            weight[k] = 0
            continue
        x0, x1 = max(0, left), min(right, w)
        y0, y1 = max(0, top), min(bottom, h)
        target[k, y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.ascontiguousarray(target.transpose(1, 2, 0)), weight


def udp_heatmaps(
    joints: np.ndarray, image_size: Sequence[int], heatmap_size: Sequence[int], sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """`(target (h, w, K) float32, weight (K,) float32)` of joints (K, 3) in crop pixels under UDP
    (mmpose's `generate_udp_gaussian_heatmaps`): the joint scaled by (heatmap - 1) / (input - 1),
    a peak-1 Gaussian at that exact position drawn within 3 sigma of its rounded position; weights
    as `msra_heatmaps`."""
    j, (in_h, in_w), (h, w) = _check_target_args(joints, image_size, heatmap_size, sigma)
    if min(in_h, in_w, h, w) < 2:
        raise ValueError(f"UDP needs sizes of at least 2 pixels, got image {image_size} and heatmap {heatmap_size}")
    factor = np.array([(in_w - 1) / (w - 1), (in_h - 1) / (h - 1)])
    radius = sigma * 3
    size = 2 * radius + 1
    g = np.arange(0, size, 1, np.float64)
    target = np.zeros((len(j), h, w), np.float32)
    weight = (j[:, 2] > 0).astype(np.float32)
    for k in range(len(j)):
        if weight[k] == 0:
            continue
        mu = j[k, :2] / factor
        mu_x, mu_y = (int(v) for v in mu + 0.5)
        left, top = int(mu_x - radius), int(mu_y - radius)
        right, bottom = int(mu_x + radius + 1), int(mu_y + radius + 1)
        if left >= w or top >= h or right < 0 or bottom < 0:
            weight[k] = 0
            continue
        # the window's own grid, its centre moved by the joint's offset from its rounded position
        cx, cy = size // 2 + mu[0] - mu_x, size // 2 + mu[1] - mu_y
        patch = np.exp(-((g[None, :] - cx) ** 2 + (g[:, None] - cy) ** 2) / (2 * sigma**2))
        x0, x1 = max(0, left), min(right, w)
        y0, y1 = max(0, top), min(bottom, h)
        target[k, y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.ascontiguousarray(target.transpose(1, 2, 0)), weight


# ------------------------------------------------------------------ decoding (jax.numpy)


def _peaks(heatmaps: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """`(flat (N, K, h*w), x (N, K) int, y (N, K) int, maxval (N, K))` of heatmaps (N, h, w, K):
    the first maximum of each map."""
    hm = jnp.asarray(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (N, h, w, K), got shape {hm.shape}")
    n, h, w, k = hm.shape
    flat = jnp.transpose(hm, (0, 3, 1, 2)).reshape(n, k, h * w)
    index = jnp.argmax(flat, axis=-1)
    maxval = jnp.max(flat, axis=-1)
    return flat, index % w, index // w, maxval


def decode_msra(heatmaps: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """`(coords (N, K, 2) float32 in heatmap pixels, maxvals (N, K))` of heatmaps (N, h, w, K), as
    the official `get_final_preds` before its inverse transform: the first arg-max (0, 0 where the
    maximum is <= 0), moved 0.25 pixel toward the larger neighbour along x and y when
    1 < x < w - 1 and 1 < y < h - 1."""
    hm = jnp.asarray(heatmaps)
    flat, x, y, maxval = _peaks(hm)
    h, w = hm.shape[1:3]
    valid = maxval > 0
    x, y = jnp.where(valid, x, 0), jnp.where(valid, y, 0)

    def at(yy, xx):
        index = jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)
        return jnp.take_along_axis(flat, index[..., None], axis=-1)[..., 0]

    inside = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    step = jnp.stack([jnp.sign(at(y, x + 1) - at(y, x - 1)), jnp.sign(at(y + 1, x) - at(y - 1, x))], axis=-1)
    coords = jnp.stack([x, y], axis=-1).astype(jnp.float32)
    coords = coords + jnp.where(inside[..., None], 0.25 * step, 0.0).astype(jnp.float32)
    return coords, maxval


def gaussian_kernel(size: int) -> np.ndarray:
    """float64 1-D Gaussian kernel of odd `size` as OpenCV's `getGaussianKernel(size, 0)`: fixed
    tables up to 7 taps, else sigma = 0.3 * ((size - 1) / 2 - 1) + 0.8; sums to 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the blur kernel size must be a positive odd number, got {size}")
    tables = {
        1: [1.0],
        3: [0.25, 0.5, 0.25],
        5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
        7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
    }
    if size in tables:
        return np.array(tables[size])
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def blur_heatmaps(heatmaps: jnp.ndarray, kernel_size: int = 11) -> jnp.ndarray:
    """Heatmaps (N, h, w, K) blurred as mmpose's `gaussian_blur` (DARK modulation): an OpenCV
    Gaussian of `kernel_size` taps with zeros outside the map, each map rescaled to keep its
    maximum (maps whose blurred maximum is <= 0 are not rescaled)."""
    hm = jnp.asarray(heatmaps, jnp.float32)
    kernel = gaussian_kernel(kernel_size).astype(np.float32)
    r = kernel_size // 2
    out = hm
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        padded = jnp.pad(out, pad)
        n = out.shape[axis]
        out = sum(float(kernel[t]) * jax.lax.slice_in_dim(padded, t, t + n, axis=axis) for t in range(kernel_size))
    old_max = jnp.max(hm, axis=(1, 2), keepdims=True)
    new_max = jnp.max(out, axis=(1, 2), keepdims=True)
    return out * jnp.where(new_max > 0, old_max / jnp.where(new_max > 0, new_max, 1.0), 1.0)


def decode_udp(heatmaps: jnp.ndarray, blur_kernel: int = 11) -> tuple[jnp.ndarray, jnp.ndarray]:
    """`(coords (N, K, 2) float32 in heatmap pixels, maxvals (N, K))` of heatmaps (N, h, w, K), as
    mmpose's `UDPHeatmap.decode` before its rescaling: the first arg-max refined by DARK-UDP (the
    log of the blurred heatmap clipped to [1e-3, 50], edge-padded; one Newton step with central
    differences); (-1, -1) without refinement where the maximum is <= 0."""
    hm = jnp.asarray(heatmaps, jnp.float32)
    _, x, y, maxval = _peaks(hm)
    n, h, w, k = hm.shape
    logs = jnp.log(jnp.clip(blur_heatmaps(hm, blur_kernel), *UDP_LOG_CLIP))
    padded = jnp.pad(jnp.transpose(logs, (0, 3, 1, 2)), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    flat = padded.reshape(n, k, (h + 2) * (w + 2))

    def at(dy, dx):
        index = jnp.clip(y + 1 + dy, 0, h + 1) * (w + 2) + jnp.clip(x + 1 + dx, 0, w + 1)
        return jnp.take_along_axis(flat, index[..., None], axis=-1)[..., 0]

    centre, right, left, down, up = at(0, 0), at(0, 1), at(0, -1), at(1, 0), at(-1, 0)
    dx, dy = 0.5 * (right - left), 0.5 * (down - up)
    dxx = right - 2 * centre + left
    dyy = down - 2 * centre + up
    dxy = 0.5 * (at(1, 1) - right - down + 2 * centre - left - up + at(-1, -1))
    eps = float(np.finfo(np.float32).eps)
    a, d = dxx + eps, dyy + eps
    det = a * d - dxy * dxy
    ok = det != 0
    det = jnp.where(ok, det, 1.0)
    off_x = jnp.where(ok, (d * dx - dxy * dy) / det, 0.0)
    off_y = jnp.where(ok, (a * dy - dxy * dx) / det, 0.0)
    coords = jnp.stack([x - off_x, y - off_y], axis=-1).astype(jnp.float32)
    coords = jnp.where((maxval > 0)[..., None], coords, -1.0)
    return coords, maxval


def heatmap_to_image(
    coords: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    heatmap_size: Sequence[int],
    input_size: Sequence[int],
    codec: str = "msra",
) -> np.ndarray:
    """float64 image pixels of heatmap coordinates `coords` (..., K, 2) of crops with `center` and
    `scale` (..., 2) (no rotation). "msra": the official `transform_preds`, the inverse crop affine
    of the heatmap size, x = cx + (x_hm - w/2) * scale_x * PIXEL_STD / w (y likewise, with the same
    factor); "udp": mmpose's decode and top-down inverse, x = cx + (x_hm / (w - 1) - 1/2) *
    scale_x * PIXEL_STD (y with h and scale_y). `input_size` (h, w) is the crop the heatmaps
    belong to; neither mapping depends on it beyond the check."""
    check_codec(codec)
    h, w = check_size(heatmap_size, "heatmap_size")
    check_size(input_size, "input_size")
    xy = np.asarray(coords, np.float64)
    c = np.asarray(center, np.float64)
    s = np.asarray(scale, np.float64) * PIXEL_STD
    if xy.shape[-1:] != (2,) or c.shape[-1:] != (2,) or s.shape != c.shape or xy.shape[:-2] != c.shape[:-1]:
        raise ValueError(
            f"heatmap_to_image needs coords (..., K, 2) with center and scale (..., 2) of the same leading "
            f"shape; got coords {xy.shape}, center {c.shape}, scale {s.shape}"
        )
    c, s = c[..., None, :], s[..., None, :]
    if codec == "msra":
        factor = s[..., :1] / w  # one factor for both axes, from the width (official)
        return c + (xy - np.array([w * 0.5, h * 0.5])) * factor
    return c + (xy / np.array([w - 1, h - 1]) - 0.5) * s
