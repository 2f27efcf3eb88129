"""Keypoint geometry and heatmap codecs against independent references: OpenCV for the affine
solve, the warp and the blur, and loop-based transcriptions of the official and mmpose formulas."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from hrnet_flax.data import keypoints as kp

RNG = np.random.default_rng(1234)


# ------------------------------------------------------------------ references (official / mmpose formulas)


def official_affine(center, scale, rot, size_hw, shift=(0.0, 0.0), inv=False):
    """The official get_affine_transform: 3 float32 points per side solved by OpenCV."""
    h, w = size_hw
    scale_px = np.asarray(scale, np.float64) * 200.0
    r = math.pi * rot / 180
    sn, cs = math.sin(r), math.cos(r)
    src_dir = np.array([-(scale_px[0] * -0.5) * sn, (scale_px[0] * -0.5) * cs])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = np.asarray(center) + scale_px * np.asarray(shift)
    src[1] = src[0] + src_dir
    dst[0] = [w * 0.5, h * 0.5]
    dst[1] = dst[0] + np.array([0, -w * 0.5])
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


def mmpose_udp_matrix(center, scale_px, rot, size_hw):
    h, w = size_hw
    r = np.deg2rad(rot)
    input_size = np.asarray(center) * 2
    sx, sy = (w - 1) / scale_px[0], (h - 1) / scale_px[1]
    m = np.zeros((2, 3))
    m[0, 0] = math.cos(r) * sx
    m[0, 1] = -math.sin(r) * sx
    m[0, 2] = sx * (-0.5 * input_size[0] * math.cos(r) + 0.5 * input_size[1] * math.sin(r) + 0.5 * scale_px[0])
    m[1, 0] = math.sin(r) * sy
    m[1, 1] = math.cos(r) * sy
    m[1, 2] = sy * (-0.5 * input_size[0] * math.sin(r) - 0.5 * input_size[1] * math.cos(r) + 0.5 * scale_px[1])
    return m


def official_target(joints, image_hw, heatmap_hw, sigma):
    """generate_target of the official JointsDataset, (K, h, w) layout, loops as written there."""
    num = len(joints)
    image_wh = np.array([image_hw[1], image_hw[0]])
    hm_wh = np.array([heatmap_hw[1], heatmap_hw[0]])
    vis = (joints[:, 2] > 0).astype(np.float32)
    weight = vis.copy()
    target = np.zeros((num, hm_wh[1], hm_wh[0]), np.float32)
    tmp = sigma * 3
    for j in range(num):
        stride = image_wh / hm_wh
        mu_x = int(joints[j][0] / stride[0] + 0.5)
        mu_y = int(joints[j][1] / stride[1] + 0.5)
        ul = [int(mu_x - tmp), int(mu_y - tmp)]
        br = [int(mu_x + tmp + 1), int(mu_y + tmp + 1)]
        if ul[0] >= hm_wh[0] or ul[1] >= hm_wh[1] or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        size = 2 * tmp + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, None]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        gx = max(0, -ul[0]), min(br[0], hm_wh[0]) - ul[0]
        gy = max(0, -ul[1]), min(br[1], hm_wh[1]) - ul[1]
        ix = max(0, ul[0]), min(br[0], hm_wh[0])
        iy = max(0, ul[1]), min(br[1], hm_wh[1])
        if weight[j] > 0.5:
            target[j][iy[0] : iy[1], ix[0] : ix[1]] = g[gy[0] : gy[1], gx[0] : gx[1]]
    return target, weight


def mmpose_udp_target(joints, image_hw, heatmap_hw, sigma):
    """generate_udp_gaussian_heatmaps of mmpose after UDPHeatmap's rescaling, (K, h, w) layout."""
    H, W = heatmap_hw
    factor = (np.array([image_hw[1], image_hw[0]]) - 1) / (np.array([W, H]) - 1)
    keypoints = joints[:, :2] / factor
    visible = (joints[:, 2] > 0).astype(np.float32)
    heatmaps = np.zeros((len(joints), H, W), np.float32)
    weights = visible.copy()
    radius = sigma * 3
    size = 2 * radius + 1
    x = np.arange(0, size, 1, dtype=np.float32)
    y = x[:, None]
    for k in range(len(joints)):
        if visible[k] < 0.5:
            continue
        mu = (keypoints[k] + 0.5).astype(np.int64)
        left, top = (mu - radius).astype(np.int64)
        right, bottom = (mu + radius + 1).astype(np.int64)
        if left >= W or top >= H or right < 0 or bottom < 0:
            weights[k] = 0
            continue
        x0 = y0 = size // 2
        x0 += keypoints[k][0] - mu[0]
        y0 += keypoints[k][1] - mu[1]
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        region = heatmaps[k, max(0, top) : min(H, bottom), max(0, left) : min(W, right)]
        patch = g[max(0, -top) : min(H, bottom) - top, max(0, -left) : min(W, right) - left]
        np.maximum(region, patch, out=region)
    return heatmaps, weights


def official_decode(heatmaps_nkhw):
    """get_max_preds plus the POST_PROCESS quarter-pixel step of get_final_preds."""
    n, k, h, w = heatmaps_nkhw.shape
    flat = heatmaps_nkhw.reshape(n, k, -1)
    idx = np.argmax(flat, 2)
    maxvals = np.amax(flat, 2)
    preds = np.stack([idx % w, np.floor(idx / w)], -1).astype(np.float32)
    preds *= (maxvals > 0)[..., None]
    for b in range(n):
        for j in range(k):
            hm = heatmaps_nkhw[b, j]
            px, py = int(math.floor(preds[b, j, 0] + 0.5)), int(math.floor(preds[b, j, 1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                preds[b, j] += np.sign(diff) * 0.25
    return preds, maxvals


def mmpose_udp_decode(heatmaps_nkhw, kernel):
    """mmpose get_heatmap_maximum + gaussian_blur (cv2) + refine_keypoints_dark_udp, per instance."""
    out, scores = [], []
    for hms in heatmaps_nkhw:
        hms = hms.astype(np.float32).copy()
        K, H, W = hms.shape
        flat = hms.reshape(K, -1)
        y_locs, x_locs = np.unravel_index(np.argmax(flat, axis=1), (H, W))
        locs = np.stack((x_locs, y_locs), -1).astype(np.float32)
        vals = np.amax(flat, axis=1)
        positive = vals > 0
        border = (kernel - 1) // 2
        blurred = hms.copy()
        for k in range(K):
            origin_max = np.max(blurred[k])
            dr = np.zeros((H + 2 * border, W + 2 * border), np.float32)
            dr[border:-border, border:-border] = blurred[k]
            dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
            blurred[k] = dr[border:-border, border:-border]
            blurred[k] *= origin_max / np.max(blurred[k])
        np.clip(blurred, 1e-3, 50.0, blurred)
        np.log(blurred, blurred)
        pad = np.pad(blurred, ((0, 0), (1, 1), (1, 1)), mode="edge").flatten()
        index = (locs[:, 0] + 1 + (locs[:, 1] + 1) * (W + 2) + (W + 2) * (H + 2) * np.arange(K)).astype(int)
        index = index.reshape(-1, 1)
        i_, ix1, iy1 = pad[index], pad[index + 1], pad[index + W + 2]
        ix1y1, ix1_y1_ = pad[index + W + 3], pad[index - W - 3]
        ix1_, iy1_ = pad[index - 1], pad[index - 2 - W]
        derivative = np.concatenate([0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)], axis=1).reshape(K, 2, 1)
        dxx = ix1 - 2 * i_ + ix1_
        dyy = iy1 - 2 * i_ + iy1_
        dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
        hessian = np.linalg.inv(np.concatenate([dxx, dxy, dxy, dyy], 1).reshape(K, 2, 2) + np.finfo(np.float32).eps * np.eye(2))
        refined = locs - np.einsum("imn,ink->imk", hessian, derivative)[..., 0]
        out.append(np.where(positive[:, None], refined, -1.0))
        scores.append(vals)
    return np.stack(out), np.stack(scores)


def blobs(n, h, w, k, rng, sigma=2.0, border=False):
    """Heatmaps (n, k, h, w): a Gaussian at a random sub-pixel point (near the border if asked)
    with weak noise."""
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.zeros((n, k, h, w), np.float32)
    for i in range(n):
        for j in range(k):
            if border:
                cx, cy = rng.choice([rng.uniform(0, 1.5), rng.uniform(w - 2.5, w - 1)]), rng.uniform(0, h - 1)
            else:
                cx, cy = rng.uniform(3, w - 4), rng.uniform(3, h - 4)
            out[i, j] = rng.uniform(0.3, 1.0) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return out + rng.normal(0, 0.01, out.shape).astype(np.float32)


def nhwc(x):
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


# ------------------------------------------------------------------ affine transforms


@pytest.mark.parametrize("rot", [0.0, 30.0, -72.5])
@pytest.mark.parametrize("size", [(256, 192), (96, 128)])
def test_crop_transform_matches_the_official_affine(rot, size):
    center, scale = np.array([312.4, 201.7]), np.array([1.13, 1.51])
    for shift, inverse in [((0, 0), False), ((0, 0), True), ((0.1, -0.05), False)]:
        ours = kp.crop_transform(center, scale, rot, size, shift=shift, inverse=inverse)
        ref = official_affine(center, scale, rot, size, shift=shift, inv=inverse)
        assert ours.dtype == np.float64 and ours.shape == (2, 3)
        np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-4 * max(1, np.abs(ref).max()))
    forward = kp.crop_transform(center, scale, rot, size)
    backward = kp.crop_transform(center, scale, rot, size, inverse=True)
    pts = RNG.uniform(0, 400, (5, 2))
    np.testing.assert_allclose(kp.transform_points(kp.transform_points(pts, forward), backward), pts, atol=1e-9)
    # the centre lands on the crop centre, and scale[0] * 200 image pixels span the crop width
    np.testing.assert_allclose(kp.transform_points(center, forward), [size[1] / 2, size[0] / 2], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(forward[:, :2], axis=0), size[1] / (scale[0] * 200), rtol=1e-12)


@pytest.mark.parametrize("rot", [0.0, 25.0, -61.0])
def test_udp_transform_matches_mmpose(rot):
    center, scale = np.array([150.5, 222.25]), np.array([0.9, 1.2])
    ours = kp.udp_transform(center, scale, rot, (256, 192))
    np.testing.assert_allclose(ours, mmpose_udp_matrix(center, scale * 200, rot, (256, 192)), rtol=1e-12, atol=1e-10)
    if rot == 0:  # the box edges go to the first and last pixel centres
        corners = center + np.array([[-0.5, -0.5], [0.5, 0.5]]) * scale * 200
        np.testing.assert_allclose(kp.transform_points(corners, ours), [[0, 0], [191, 255]], atol=1e-9)


def test_transform_points_shapes_and_errors():
    m = np.array([[2.0, 0.5, 3.0], [-1.0, 1.5, 4.0]])
    pts = RNG.normal(size=(3, 4, 2))
    out = kp.transform_points(pts, m)
    assert out.shape == (3, 4, 2)
    np.testing.assert_allclose(out[1, 2], [2 * pts[1, 2, 0] + 0.5 * pts[1, 2, 1] + 3, -pts[1, 2, 0] + 1.5 * pts[1, 2, 1] + 4])
    with pytest.raises(ValueError, match=r"points \(\.\.\., 2\)"):
        kp.transform_points(np.zeros((3, 3)), m)


def smooth_image(h, w, rng):
    noise = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 3)


@pytest.mark.parametrize("rot", [0.0, 37.0])
def test_warp_image_matches_cv2_warp_affine(rot):
    image = smooth_image(90, 120, RNG)
    # a crop reaching past the image on two sides: the border must be black like OpenCV's
    matrix = kp.crop_transform(np.array([20.0, 70.0]), np.array([0.45, 0.6]), rot, (64, 48))
    ours = kp.warp_image(image, matrix, (64, 48))
    ref = cv2.warpAffine(image, matrix, (48, 64), flags=cv2.INTER_LINEAR)
    assert ours.dtype == np.float32 and ours.shape == (64, 48, 3)
    assert np.abs(ours - ref).max() <= 1.0
    black = (ref == 0).all(-1)
    assert black.sum() > 100  # the crop reaches past the image
    assert (ours[black] < 1.0).all() and (ours[~black].max(-1) > 0).mean() > 0.99
    # float input and a single channel
    grey = image[..., 0].astype(np.float32) / 3
    ours = kp.warp_image(grey, matrix, (64, 48))
    ref = cv2.warpAffine(grey, matrix, (48, 64), flags=cv2.INTER_LINEAR)
    assert ours.shape == (64, 48)
    assert np.abs(ours - ref).max() < 0.5


def test_warp_image_is_exact_on_pixel_grid():
    image = RNG.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    shift = np.array([[1.0, 0.0, -3.0], [0.0, 1.0, -5.0]])  # crop pixel (x, y) = image (x + 3, y + 5)
    out = kp.warp_image(image, shift, (10, 12))
    np.testing.assert_array_equal(out, image[5:15, 3:15].astype(np.float32))
    assert (kp.warp_image(image, np.array([[1.0, 0, 100], [0, 1, 100]]), (8, 8)) == 0).all()


# ------------------------------------------------------------------ targets


def target_joints(rng, k, image_hw):
    h, w = image_hw
    joints = np.stack([rng.uniform(-20, w + 20, k), rng.uniform(-20, h + 20, k), rng.choice([0, 1, 2], k)], 1)
    joints[0] = [-3.9, 5.0, 2]  # x/4 + 0.5 truncates toward 0: centre column 0
    joints[1] = [w + 60, h / 2, 2]  # the whole window off the map: weight 0
    joints[2] = [w / 2, -25.9, 1]  # window partly on the map
    joints[3] = [w / 2, h / 2, 0]  # unlabelled: weight 0, no Gaussian
    joints[4] = [w - 2.1, h - 1.0, 2]
    return joints


@pytest.mark.parametrize("sigma", [2.0, 3.0, 1.5])
@pytest.mark.parametrize("image_hw", [(256, 192), (128, 96)])
def test_msra_heatmaps_match_the_official_generate_target(sigma, image_hw):
    joints = target_joints(np.random.default_rng(int(sigma * 10)), 17, image_hw)
    heatmap_hw = (image_hw[0] // 4, image_hw[1] // 4)
    target, weight = kp.msra_heatmaps(joints, image_hw, heatmap_hw, sigma)
    ref_target, ref_weight = official_target(joints, image_hw, heatmap_hw, sigma)
    assert target.shape == (*heatmap_hw, 17) and target.dtype == np.float32 and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, ref_weight)
    np.testing.assert_allclose(target, ref_target.transpose(1, 2, 0), atol=1e-7)
    assert weight[1] == 0 and weight[3] == 0 and weight[2] == 1 and target[..., 3].max() == 0
    if sigma != 1.5:  # (with 3 sigma not an integer the official window puts this peak a pixel off)
        assert target[..., 0].max() == 1 and np.argmax(target[..., 0].max(0)) == 0


@pytest.mark.parametrize("sigma", [2.0, 3.0])
@pytest.mark.parametrize("image_hw", [(256, 192), (384, 288)])
def test_udp_heatmaps_match_mmpose(sigma, image_hw):
    joints = target_joints(np.random.default_rng(7), 17, image_hw)
    heatmap_hw = (image_hw[0] // 4, image_hw[1] // 4)
    target, weight = kp.udp_heatmaps(joints, image_hw, heatmap_hw, sigma)
    ref_target, ref_weight = mmpose_udp_target(joints, image_hw, heatmap_hw, sigma)
    np.testing.assert_array_equal(weight, ref_weight)
    np.testing.assert_allclose(target, ref_target.transpose(1, 2, 0), atol=2e-6)
    # the Gaussian sits at the sub-pixel position: its centre of mass near x * (hm - 1) / (in - 1)
    j = np.array([[101.3, 77.7, 2]])
    t, _ = kp.udp_heatmaps(j, image_hw, heatmap_hw, sigma)
    ys, xs = np.mgrid[0 : heatmap_hw[0], 0 : heatmap_hw[1]]
    com = np.array([(t[..., 0] * xs).sum(), (t[..., 0] * ys).sum()]) / t.sum()
    expected = j[0, :2] * (np.array(heatmap_hw[::-1]) - 1) / (np.array(image_hw[::-1]) - 1)
    np.testing.assert_allclose(com, expected, atol=0.02)


def test_target_errors():
    with pytest.raises(ValueError, match=r"joints must have shape \(K, 3\)"):
        kp.msra_heatmaps(np.zeros((17, 2)), (256, 192), (64, 48), 2.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        kp.udp_heatmaps(np.zeros((17, 3)), (256, 192), (64, 48), 0.0)
    with pytest.raises(ValueError, match=r"heatmap_size .* \(height, width\)"):
        kp.msra_heatmaps(np.zeros((17, 3)), (256, 192), (64, 0), 2.0)


# ------------------------------------------------------------------ decoding


def test_decode_msra_matches_the_official_decoder():
    rng = np.random.default_rng(5)
    hms = blobs(3, 20, 16, 5, rng)
    hms[0, 1] = -np.abs(hms[0, 1]) - 0.1  # maximum <= 0: coordinates 0
    hms[0, 2] = 0.0
    hms[0, 2, 10, 1] = 1.0  # peak at x = 1: not refined
    hms[1, 0] = 0.0
    hms[1, 0, 5, 7] = 1.0
    hms[1, 0, 5, 8] = 0.5  # refined right, not along y (equal neighbours)
    hms[1, 1] = 0.0
    hms[1, 1, 18, 7] = 1.0  # y = h - 2: not refined
    hms[2, 0] = 0.5  # a flat map: the first pixel
    coords, maxvals = kp.decode_msra(nhwc(hms))
    ref_coords, ref_max = official_decode(hms)
    np.testing.assert_array_equal(np.asarray(coords), ref_coords)
    np.testing.assert_allclose(np.asarray(maxvals), ref_max[..., 0] if ref_max.ndim == 3 else ref_max)
    np.testing.assert_array_equal(np.asarray(coords)[1, 0], [7.25, 5.0])
    np.testing.assert_array_equal(np.asarray(coords)[0, 1], [0, 0])


@pytest.mark.parametrize("kernel", [11, 7])
def test_decode_udp_matches_mmpose_dark_udp(kernel):
    rng = np.random.default_rng(kernel)
    hms = np.concatenate([blobs(2, 24, 18, 4, rng), blobs(1, 24, 18, 4, rng, border=True)])
    hms[0, 3] = -0.2  # maximum <= 0: (-1, -1)
    coords, maxvals = kp.decode_udp(nhwc(hms), blur_kernel=kernel)
    ref_coords, ref_max = mmpose_udp_decode(hms, kernel)
    np.testing.assert_allclose(np.asarray(maxvals), ref_max, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(coords), ref_coords, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(coords)[0, 3], [-1, -1])
    assert np.abs(np.asarray(coords) - np.round(np.asarray(coords))).max() > 0.05  # refinement happened


def test_blur_kernel_is_opencvs():
    for size in (3, 5, 7, 11, 17):
        np.testing.assert_allclose(kp.gaussian_kernel(size), cv2.getGaussianKernel(size, 0)[:, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="positive odd"):
        kp.gaussian_kernel(4)


def test_flip_heatmaps_is_the_official_flip_back_with_shift():
    hms = RNG.normal(size=(2, 6, 5, 4)).astype(np.float32)  # NHWC, 4 joints
    pairs = ((0, 1), (2, 3))
    chw = hms.transpose(0, 3, 1, 2)[:, :, :, ::-1].copy()
    for a, b in pairs:
        chw[:, [a, b]] = chw[:, [b, a]]
    shifted = chw.copy()
    shifted[:, :, :, 1:] = chw[:, :, :, 0:-1]
    np.testing.assert_array_equal(np.asarray(kp.flip_heatmaps(hms, pairs, shift=False)), chw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(np.asarray(kp.flip_heatmaps(hms, pairs)), shifted.transpose(0, 2, 3, 1))


def test_flip_joints_is_the_official_fliplr_joints():
    joints = np.array([[10.0, 5.0, 2], [30.0, 6.0, 1], [7.0, 8.0, 0], [50.0, 9.0, 2]])
    flipped = kp.flip_joints(joints, 64, ((0, 1), (2, 3)))
    np.testing.assert_array_equal(flipped, [[33.0, 6.0, 1], [53.0, 5.0, 2], [13.0, 9.0, 2], [0.0, 0.0, 0]])
    labelled = joints[:, 2] > 0
    back = kp.flip_joints(flipped, 64, ((0, 1), (2, 3)))
    np.testing.assert_array_equal(back[labelled], joints[labelled])


# ------------------------------------------------------------------ back to the image


def test_heatmap_to_image_is_the_official_transform_preds_and_mmpose_udp():
    coords = RNG.uniform(0, 48, (3, 5, 2))
    center = RNG.uniform(100, 300, (3, 2))
    scale = RNG.uniform(0.5, 2.0, (3, 2))
    ours = kp.heatmap_to_image(coords, center, scale, (64, 48), (256, 192), "msra")
    for i in range(3):  # transform_preds: the inverse affine of the heatmap size, no rotation
        inv = official_affine(center[i], scale[i], 0, (64, 48), inv=True)
        np.testing.assert_allclose(ours[i], coords[i] @ inv[:, :2].T + inv[:, 2], rtol=1e-5)
    ours = kp.heatmap_to_image(coords, center, scale, (64, 48), (256, 192), "udp")
    # mmpose: keypoints / [W - 1, H - 1] * input_size, then / input_size * scale + center - scale / 2
    input_wh, scale_px = np.array([192, 256]), scale[:, None] * 200
    kps = coords / np.array([47, 63]) * input_wh
    np.testing.assert_allclose(ours, kps / input_wh * scale_px + center[:, None] - 0.5 * scale_px, rtol=1e-12)
    single = kp.heatmap_to_image(coords[0], center[0], scale[0], (64, 48), (256, 192), "udp")
    np.testing.assert_allclose(single, ours[0])
    with pytest.raises(ValueError, match="same leading shape"):
        kp.heatmap_to_image(coords, center[:2], scale[:2], (64, 48), (256, 192))
    with pytest.raises(ValueError, match="unknown heatmap codec"):
        kp.heatmap_to_image(coords, center, scale, (64, 48), (256, 192), "dark")


@pytest.mark.parametrize("codec", ["msra", "udp"])
@pytest.mark.parametrize("image_hw", [(256, 192), (384, 288)])
def test_round_trip_through_crop_heatmap_and_back(codec, image_hw):
    """An image joint, cropped, encoded, decoded and mapped back returns to where it was: exactly
    when it falls on the heatmap grid, within the codec's quantisation otherwise."""
    rng = np.random.default_rng([len(codec), *image_hw])
    heatmap_hw = (image_hw[0] // 4, image_hw[1] // 4)
    sigma = 2.0 if image_hw[0] == 256 else 3.0
    center = np.array([321.7, 188.2])
    scale = kp.box_to_center_scale([250.0, 60.0, 130.0, 260.0], image_hw[1] / image_hw[0])[1]
    forward = (kp.udp_transform if codec == "udp" else kp.crop_transform)(center, scale, 0.0, image_hw)
    inverse = kp.invert_affine(forward)
    hm_h, hm_w = heatmap_hw
    if codec == "udp":
        grid_to_crop = (np.array([image_hw[1], image_hw[0]]) - 1) / (np.array([hm_w, hm_h]) - 1)
    else:
        grid_to_crop = np.array([image_hw[1] / hm_w, image_hw[0] / hm_h])
    on_grid = np.stack([rng.integers(8, hm_w - 8, 6), rng.integers(8, hm_h - 8, 6)], 1) * grid_to_crop
    off_grid = np.stack([rng.uniform(8, hm_w - 8, 6), rng.uniform(8, hm_h - 8, 6)], 1) * grid_to_crop
    for crop_points, exact in ((on_grid, True), (off_grid, False)):
        image_points = kp.transform_points(crop_points, inverse)
        joints = np.concatenate([kp.transform_points(image_points, forward), np.full((6, 1), 2.0)], 1)
        encode = kp.udp_heatmaps if codec == "udp" else kp.msra_heatmaps
        target, weight = encode(joints, image_hw, heatmap_hw, sigma)
        assert weight.all()
        decode = kp.decode_udp if codec == "udp" else kp.decode_msra
        coords, maxvals = decode(target[None])
        back = kp.heatmap_to_image(np.asarray(coords, np.float64)[0], center, scale, heatmap_hw, image_hw, codec)
        pixel = scale * kp.PIXEL_STD / np.array([hm_w, hm_h])  # image pixels per heatmap pixel
        error = np.abs(back - image_points) / pixel
        if exact:
            assert error.max() < (1e-4 if codec == "udp" else 1e-9), error
        else:
            assert error.max() <= (1e-3 if codec == "udp" else 0.5 + 1e-9), error
            if codec == "msra":
                assert error.max() > 0.05  # the grid's quantisation is visible


# ------------------------------------------------------------------ half body


def official_half_body(joints, upper_ids, aspect_ratio, draw):
    upper, lower = [], []
    for j in range(len(joints)):
        if joints[j, 2] > 0:
            (upper if j in upper_ids else lower).append(joints[j, :2])
    if draw < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    chosen = np.array(chosen)
    center = chosen.mean(0)
    w, h = chosen.max(0) - chosen.min(0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w / 200, h / 200]) * 1.5


def test_half_body_box_is_the_official_half_body_transform():
    upper = tuple(range(11))
    for trial in range(30):
        rng = np.random.default_rng(trial)
        joints = np.concatenate([RNG.uniform(0, 300, (17, 2)), RNG.choice([0, 1, 2], (17, 1), p=[0.4, 0.3, 0.3])], 1)
        ours = kp.half_body_box(joints, upper, 0.75, rng)
        ref = official_half_body(joints, upper, 0.75, np.random.default_rng(trial).standard_normal())
        if ref is None:
            assert ours is None
        else:
            np.testing.assert_allclose(ours[0], ref[0])
            np.testing.assert_allclose(ours[1], ref[1])
    few = np.array([[10.0, 10.0, 2]] + [[0.0, 0.0, 0]] * 16)
    assert kp.half_body_box(few, upper, 0.75, np.random.default_rng(0)) is None
