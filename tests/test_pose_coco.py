"""COCO keypoints: the pose source on a hand-made annotation set, OKS-NMS and rescoring against
direct loop formulas, and the AP evaluation against hand-derived values."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from hrnet_flax.data.coco import (
    COCO_FLIP_PAIRS,
    COCO_JOINTS,
    COCO_SIGMAS,
    COCO_SKELETON,
    COCO_UPPER_BODY,
    CocoDataError,
    CocoKeypoints,
    evaluate_keypoints,
    oks_nms,
    rescore,
)
from hrnet_flax.data.images import UnreadableImageError
from hrnet_flax.data.pose import PoseSource

K = 17
THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALLS = np.linspace(0.0, 1.0, 101)

# (id, width, height)
IMAGES = [(1, 64, 48), (2, 80, 60), (3, 50, 50), (4, 100, 100)]


def person_keypoints(box, seed, unlabelled=()):
    """17 (x, y, v) inside `box`, v = 2 except `unlabelled` joints (0, 0, 0)."""
    rng = np.random.default_rng(seed)
    x, y, w, h = box
    pts = np.stack([x + w * rng.uniform(0.1, 0.9, K), y + h * rng.uniform(0.1, 0.9, K), np.full(K, 2.0)], 1)
    pts = np.round(pts, 2)
    pts[list(unlabelled)] = 0
    return pts


# Persons: A (image 1, medium), B (image 2, large, box over the left edge, face unlabelled),
# C (image 3, medium).
A = dict(id=11, image_id=1, bbox=[5.0, 4.0, 40.0, 40.0], area=5000.0, kp=person_keypoints([5, 4, 40, 40], 0))
B = dict(id=21, image_id=2, bbox=[-5.0, 10.0, 60.0, 70.0], area=20000.0, kp=person_keypoints([0, 10, 55, 45], 1, range(5)))
C = dict(id=31, image_id=3, bbox=[10.0, 10.0, 30.0, 35.0], area=3000.0, kp=person_keypoints([10, 10, 30, 35], 2))
PERSONS = [A, B, C]


def annotation(p, iscrowd=0, category_id=1, **extra):
    kp = p["kp"]
    ann = {
        "id": p["id"], "image_id": p["image_id"], "category_id": category_id, "bbox": p["bbox"], "area": p["area"],
        "iscrowd": iscrowd, "keypoints": kp.reshape(-1).tolist(), "num_keypoints": int((kp[:, 2] > 0).sum()),
    }  # fmt: skip
    ann.update(extra)
    return ann


def coco_annotations():
    """A person keypoints file: the persons plus what the loader drops (crowd, no labelled joint,
    area 0, a box clipped away, another category)."""
    zeros = dict(kp=np.zeros((K, 3)))
    anns = [
        annotation(A),
        # in an image without predictions: COCOeval matches detections to these ignored regions
        annotation(dict(zeros, id=12, image_id=4, bbox=[0.0, 0.0, 60.0, 40.0], area=2000.0), iscrowd=1),
        annotation(dict(zeros, id=13, image_id=4, bbox=[30.0, 5.0, 20.0, 30.0], area=500.0)),
        annotation(B),
        annotation(C),
        annotation(dict(C, id=32, area=0.0)),
        annotation(dict(C, id=33, bbox=[10.0, 10.0, 0.5, 20.5])),  # kept: x2 = x1 (official), width 0
        annotation(dict(C, id=35, bbox=[10.0, 10.0, 0.5, 0.5])),  # a one-pixel box: no crop, dropped
        {"id": 34, "image_id": 3, "category_id": 2, "bbox": [1.0, 1.0, 5.0, 5.0], "area": 20.0, "iscrowd": 0},
    ]
    return {
        "images": [{"id": i, "width": w, "height": h, "file_name": f"{i:012d}.jpg"} for i, w, h in IMAGES],
        "annotations": anns,
        "categories": [
            {"id": 1, "name": "person", "keypoints": list(COCO_JOINTS),
             "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON]},
            {"id": 2, "name": "dog"},
        ],
    }  # fmt: skip


def eval_annotations():
    """The ground truth of the evaluation tests: A, B, C, the crowd region, the unlabelled person
    and a dog (another category, without keypoints)."""
    data = coco_annotations()
    data["annotations"] = [a for a in data["annotations"] if a["id"] in (11, 12, 13, 21, 31, 34)]
    return data


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def write_images(folder):
    os.makedirs(folder, exist_ok=True)
    for i, w, h in IMAGES:
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(os.path.join(folder, f"{i:012d}.jpg"))


@pytest.fixture
def coco_root(tmp_path):
    write_json(tmp_path / "annotations" / "person_keypoints_val2017.json", coco_annotations())
    write_json(tmp_path / "annotations" / "person_keypoints_train2017.json", coco_annotations())
    write_images(tmp_path / "val2017")
    write_images(tmp_path / "train2017")
    return tmp_path


@pytest.fixture
def gt_file(tmp_path):
    return write_json(tmp_path / "gt.json", eval_annotations())


# ------------------------------------------------------------------ constants


def test_constants():
    from pycocotools.cocoeval import Params

    assert len(COCO_JOINTS) == K and COCO_UPPER_BODY == tuple(range(11))
    np.testing.assert_array_equal(COCO_SIGMAS, Params(iouType="keypoints").kpt_oks_sigmas)
    for a, b in COCO_FLIP_PAIRS:
        assert COCO_JOINTS[a].startswith("left_") and COCO_JOINTS[b] == "right_" + COCO_JOINTS[a][5:]
    assert len(COCO_FLIP_PAIRS) == 8 and len(COCO_SKELETON) == 19
    assert (5, 6) in COCO_SKELETON and (15, 13) in COCO_SKELETON  # shoulders; left ankle-knee
    assert all(0 <= j < K for limb in COCO_SKELETON for j in limb)


# ------------------------------------------------------------------ the source


@pytest.mark.parametrize("split", ["train", "val"])
def test_ground_truth_instances(coco_root, split):
    source = CocoKeypoints(coco_root)
    assert isinstance(source, PoseSource) and source.num_joints == K and source.flip_pairs == COCO_FLIP_PAIRS
    # A, B, C and the zero-width box; not the crowd region, the unlabelled person, area 0, the
    # one-pixel box or the dog
    assert source.num_examples(split) == 4
    expected_boxes = [
        [5, 4, 39, 39],  # (x2 - x1) = w - 1
        [0, 10, 59, 49],  # x1 = 0, x2 = min(79, 0 + 59), y2 = min(59, 10 + 69)
        [10, 10, 29, 34],
        [10, 10, 0, 19.5],  # h - 1
    ]
    for i, (person, box) in enumerate(zip([A, B, C, C], expected_boxes)):
        inst = source.load(split, i)
        np.testing.assert_array_equal(inst.box, box)
        np.testing.assert_array_equal(inst.joints, person["kp"])
        assert inst.image_id == person["image_id"] and inst.score == 1.0 and inst.area == person["area"]
        w, h = next((w, h) for j, w, h in IMAGES if j == person["image_id"])
        assert inst.image.shape == (h, w, 3) and inst.image.dtype == np.uint8
    assert source.image_path(split, 1) == os.path.join(str(coco_root), f"{split}2017", "000000000002.jpg")
    assert "annotation id 21" in source.name(split, 1)
    assert source.annotation_file(split) == os.path.join(str(coco_root), "annotations", f"person_keypoints_{split}2017.json")
    with pytest.raises(IndexError):
        source.load(split, 4)


def test_explicit_files_and_official_layout(tmp_path):
    ann = write_json(tmp_path / "my" / "kp.json", coco_annotations())
    write_images(tmp_path / "pics")
    source = CocoKeypoints(annotation_files={"val": ann}, image_dirs={"val": tmp_path / "pics"})
    assert source.num_examples("val") == 4 and source.load("val", 2).image.shape == (50, 50, 3)
    assert source.annotation_file("val") == ann
    # the official code's root/images/val2017
    write_json(tmp_path / "off" / "annotations" / "person_keypoints_val2017.json", coco_annotations())
    write_images(tmp_path / "off" / "images" / "val2017")
    source = CocoKeypoints(tmp_path / "off")
    assert source.image_path("val", 0) == os.path.join(str(tmp_path), "off", "images", "val2017", "000000000001.jpg")
    assert source.load("val", 0).image.shape == (48, 64, 3)


def test_detections(coco_root, tmp_path):
    dets = [
        {"image_id": 2, "category_id": 1, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [3.0, 4.0, 10.0, 20.0], "score": 0.3},
        {"image_id": 1, "category_id": 1, "bbox": [3.0, 4.0, 10.0, 20.0], "score": 0.29},
        {"image_id": 3, "category_id": 2, "bbox": [3.0, 4.0, 10.0, 20.0], "score": 0.99},  # not a person
    ]
    path = write_json(tmp_path / "dets.json", dets)
    source = CocoKeypoints(coco_root, detections=path, det_score_threshold=0.3)
    assert source.num_examples("val") == 2  # score >= threshold, persons only, file order
    inst = source.load("val", 0)
    assert inst.joints is None and inst.image_id == 2 and inst.score == 0.9 and inst.image.shape == (60, 80, 3)
    np.testing.assert_array_equal(inst.box, [1, 2, 30, 40])  # detection boxes are not clipped
    assert source.load("val", 1).score == 0.3
    assert source.num_examples("train") == 4  # training keeps the ground truth
    assert CocoKeypoints(coco_root, detections=dets).num_examples("val") == 3  # a list; threshold 0


# ------------------------------------------------------------------ OKS-NMS and rescoring


def oks_reference(g, d, area_g, area_d, sigmas, in_vis=None):
    """The official oks_iou for one pair, written as loops over joints."""
    terms = []
    select = None
    if in_vis is not None:
        select = list(g[:, 2] > in_vis) and list(d[:, 2] > in_vis)  # the official expression
    for k in range(len(sigmas)):
        if select is not None and not select[k]:
            continue
        dist2 = (d[k, 0] - g[k, 0]) ** 2 + (d[k, 1] - g[k, 1]) ** 2
        terms.append(math.exp(-dist2 / (2 * sigmas[k]) ** 2 / ((area_g + area_d) / 2 + np.spacing(1)) / 2))
    return sum(terms) / len(terms) if terms else 0.0


def nms_reference(kps, scores, areas, threshold, in_vis=None):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if oks_reference(kps[i], kps[j], areas[i], areas[j], COCO_SIGMAS, in_vis) <= threshold]
    return keep


@pytest.mark.parametrize("in_vis", [None, 0.5])
def test_oks_nms_matches_direct_formula(in_vis):
    # 12 noisy copies (0.2 to 4 px) of 4 poses
    rng = np.random.default_rng(6)
    base = rng.uniform(0, 100, (4, K, 2))
    noise = rng.uniform(0.2, 4.0, (12, 1, 1))
    kps = np.concatenate([base[rng.integers(0, 4, 12)] + noise * rng.normal(0, 1, (12, K, 2)), rng.uniform(0, 1, (12, K, 1))], 2)
    scores = rng.permutation(12) / 12.0 + 0.01
    areas = rng.uniform(1000, 5000, 12)
    counts = []
    for threshold in (0.3, 0.6, 0.9):
        keep = oks_nms(kps, scores, areas, threshold, in_vis_threshold=in_vis)
        assert keep.tolist() == nms_reference(kps, scores, areas, threshold, in_vis)
        counts.append(len(keep))
    assert counts[0] < counts[1] < counts[2] < 12  # the thresholds matter
    with_vis = oks_nms(kps, scores, areas, 0.6, in_vis_threshold=0.5)
    assert len(with_vis) != len(oks_nms(kps, scores, areas, 0.6))  # so does the joint selection
    assert oks_nms(kps[:0], scores[:0], areas[:0]).tolist() == []
    # identical poses have OKS exactly 1: removed only when it exceeds the threshold
    twins, twin_scores, twin_areas = kps[[0, 0]], np.array([0.5, 0.7]), areas[[0, 0]]
    assert oks_nms(twins, twin_scores, twin_areas, 1.0).tolist() == [1, 0]
    assert oks_nms(twins, twin_scores, twin_areas, 0.999).tolist() == [1]


def test_rescore_and_per_image_nms():
    kps = np.zeros((5, K, 3))
    kps[:, :, :2] = np.random.default_rng(0).uniform(0, 50, (1, K, 2))
    kps[:, :, 2] = [[0.1] * K, [0.5] * 8 + [0.2] * 9, [0.9] * K, [0.1] * K, [1.0] * K]
    kps[3, :, 0] += 500  # far from the others
    kps[4, :, 0] += 0.2  # close to the others, but in another image
    image_ids = np.array([7, 7, 7, 7, 9])
    box_scores = np.array([0.9, 0.8, 0.5, 0.7, 0.6])
    areas = np.full(5, 1000.0)
    kept, scores = rescore(kps, image_ids, box_scores, areas)
    expected = []
    for p, b in zip(kps, box_scores):
        above = [s for s in p[:, 2] if s > 0.2]
        expected.append(b * (sum(above) / len(above) if above else 0.0))
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores[0] == 0.0 and scores[1] == pytest.approx(0.4)  # joints at exactly 0.2 do not count
    # image 7: 2 (0.45) suppresses 1 (0.40) and 0 (0.0); 3 (0.0) is far; image 9 alone
    assert kept.tolist() == [2, 3, 4]


# ------------------------------------------------------------------ evaluation


def predictions(persons, shifts, scores, joint_score=1.0):
    kps = np.stack([np.concatenate([p["kp"][:, :2] + np.array(s, float), np.full((K, 1), joint_score)], 1) for p, s in zip(persons, shifts)])
    return kps, np.array([p["image_id"] for p in persons]), np.array(scores, float), np.array([p["area"] for p in persons])


def coco_oks(pred, person):
    """COCOeval's OKS of a prediction with a ground-truth person, over the labelled joints."""
    terms = []
    for k in range(K):
        if person["kp"][k, 2] > 0:
            d2 = (pred[k, 0] - person["kp"][k, 0]) ** 2 + (pred[k, 1] - person["kp"][k, 1]) ** 2
            terms.append(math.exp(-d2 / (2 * COCO_SIGMAS[k]) ** 2 / person["area"] / 2))
    return sum(terms) / len(terms)


def ap_101(hits, num_gt):
    """COCO's 101-point interpolated AP of detections sorted by score (True = match)."""
    tp = np.cumsum(hits)
    recall = tp / num_gt
    precision = tp / np.arange(1, len(hits) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return sum(precision[recall >= r].max() if (recall >= r).any() else 0.0 for r in RECALLS) / len(RECALLS)


def test_evaluate_exact_predictions_score_100(gt_file):
    result = evaluate_keypoints(*predictions(PERSONS, [(0, 0)] * 3, [0.9, 0.8, 0.7]), gt_file)
    assert set(result) == {"ap", "ap50", "ap75", "apm", "apl", "ar", "ar50", "ar75", "arm", "arl"}
    for name, value in result.items():
        assert value == pytest.approx(100.0), name


def test_evaluate_far_predictions_score_0(gt_file):
    result = evaluate_keypoints(*predictions(PERSONS, [(1000, 1000)] * 3, [0.9, 0.8, 0.7]), gt_file)
    assert result["ap"] == 0.0 and result["ar"] == 0.0 and result["ap50"] == 0.0


def test_evaluate_mixed_case(gt_file):
    # A exact (0.9), B far (0.8), C exact (0.7): hits T F T at every OKS threshold; recall 1/3, 1/3,
    # 2/3 and interpolated precision 1, 2/3, 2/3, so recall thresholds 0..0.33 (34) give 1 and
    # 0.34..0.66 (33) give 2/3: AP = (34 + 22) / 101.
    result = evaluate_keypoints(*predictions(PERSONS, [(0, 0), (500, 0), (0, 0)], [0.9, 0.8, 0.7]), gt_file)
    for name in ("ap", "ap50", "ap75"):
        assert result[name] == pytest.approx(100 * 56 / 101), name
    assert result["ar"] == pytest.approx(100 * 2 / 3)
    assert ap_101([True, False, True], 3) == pytest.approx(56 / 101)  # the helper agrees


def test_evaluate_partial_oks(gt_file):
    # A exact (0.9), B shifted 16 px (0.8; OKS about 0.78, between the thresholds), C far (0.7)
    kps, ids, scores, areas = predictions(PERSONS, [(0, 0), (16, 0), (400, 0)], [0.9, 0.8, 0.7])
    oks_b = coco_oks(kps[1], B)
    assert 0.55 < oks_b < 0.9 and np.abs(THRESHOLDS - oks_b).min() > 1e-3
    per_threshold = [ap_101([True, oks_b >= t, False], 3) for t in THRESHOLDS]  # 67/101 or 34/101
    assert set(np.round(np.array(per_threshold) * 101).astype(int)) == {67, 34}
    result = evaluate_keypoints(kps, ids, scores, areas, gt_file)
    assert result["ap"] == pytest.approx(100 * np.mean(per_threshold))
    assert result["ap50"] == pytest.approx(100 * 67 / 101)
    assert result["ar"] == pytest.approx(100 * np.mean([(1 + (oks_b >= t)) / 3 for t in THRESHOLDS]))
    # by area: B is the only large person
    assert result["apl"] == pytest.approx(100 * np.mean([float(oks_b >= t) for t in THRESHOLDS]))


def test_evaluate_rescoring_and_nms(gt_file):
    # A exact with weak joints (0.9 x 0.3 = 0.27), C far (0.5), B exact (0.4): rescored, the false
    # positive comes first: recall 0, 1/3, 2/3, precision 0, 1/2, 2/3 -> 67 thresholds at 2/3.
    kps, ids, scores, areas = predictions([A, C, B], [(0, 0), (500, 0), (0, 0)], [0.9, 0.5, 0.4])
    kps[0, :, 2] = 0.3
    assert evaluate_keypoints(kps, ids, scores, areas, gt_file, rescore=False)["ap"] == pytest.approx(100 * 56 / 101)
    assert evaluate_keypoints(kps, ids, scores, areas, gt_file)["ap"] == pytest.approx(100 * 67 * 2 / 3 / 101)
    # a near-duplicate of A (0.85): a false positive before B and C unless OKS-NMS removes it;
    # hits T F T T: interpolated precision 1 up to recall 1/3, then 3/4.
    kps, ids, scores, areas = predictions([A, A, B, C], [(0, 0), (0.5, 0), (0, 0), (0, 0)], [0.9, 0.85, 0.8, 0.7])
    assert evaluate_keypoints(kps, ids, scores, areas, gt_file, rescore=False)["ap"] == pytest.approx(100 * (34 + 67 * 0.75) / 101)
    assert evaluate_keypoints(kps, ids, scores, areas, gt_file)["ap"] == pytest.approx(100.0)


# ------------------------------------------------------------------ errors


def test_annotation_file_errors(tmp_path):
    def source_for(data):
        path = write_json(tmp_path / "ann.json", data)
        return CocoKeypoints(annotation_files={"val": path}, image_dirs={"val": tmp_path}), path

    source, path = source_for([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(CocoDataError, match=r"ann\.json is not a COCO keypoints annotation file"):
        source.num_examples("val")
    data = coco_annotations()
    del data["categories"][0]["keypoints"]
    with pytest.raises(CocoDataError, match="has no 'keypoints' list"):
        source_for(data)[0].num_examples("val")
    data = coco_annotations()
    del data["annotations"][3]["keypoints"]
    with pytest.raises(CocoDataError, match=r"ann\.json: annotation id 21 has no 'keypoints'"):
        source_for(data)[0].num_examples("val")
    data = coco_annotations()
    data["annotations"][4]["keypoints"] = data["annotations"][4]["keypoints"][:-1]
    with pytest.raises(CocoDataError, match=r"annotation id 31: 'keypoints' has 50 values; expected 3 x 17"):
        source_for(data)[0].num_examples("val")
    data = coco_annotations()
    data["annotations"][0]["bbox"] = [64.0, 4.0, 10.0, 10.0]  # image 1 is 64 wide
    with pytest.raises(CocoDataError, match=r"annotation id 11 has bbox .* entirely outside its image"):
        source_for(data)[0].num_examples("val")
    data = coco_annotations()
    data["annotations"][0]["bbox"] = [-20.0, 4.0, 20.0, 10.0]
    with pytest.raises(CocoDataError, match="entirely outside"):
        source_for(data)[0].num_examples("val")
    data = coco_annotations()
    data["annotations"][0]["image_id"] = 99
    with pytest.raises(CocoDataError, match="annotation id 11 refers to image_id 99"):
        source_for(data)[0].num_examples("val")
    data = coco_annotations()
    data["images"][1]["id"] = "2"
    with pytest.raises(CocoDataError, match=r"images\[1\] 'id' must be an integer"):
        source_for(data)[0].num_examples("val")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CocoDataError, match=r"bad\.json is not valid JSON"):
        CocoKeypoints(annotation_files={"val": tmp_path / "bad.json"}, image_dirs={"val": tmp_path}).num_examples("val")
    with pytest.raises(FileNotFoundError, match=r"person_keypoints_train2017\.json does not exist"):
        CocoKeypoints(tmp_path).num_examples("train")
    with pytest.raises(ValueError, match="unknown COCO keypoints split 'test'"):
        CocoKeypoints(tmp_path).num_examples("test")


def test_detection_file_errors(coco_root, tmp_path):
    def count(dets):
        return CocoKeypoints(coco_root, detections=write_json(tmp_path / "d.json", dets)).num_examples("val")

    with pytest.raises(CocoDataError, match=r"d\.json is not a COCO detection results file"):
        count({"annotations": []})
    with pytest.raises(CocoDataError, match=r"detection \[1\] must be an object with image_id, category_id, bbox and score"):
        count([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}, {"image_id": 1, "bbox": [0, 0, 5, 5]}])
    with pytest.raises(CocoDataError, match=r"detection \[0\] 'bbox' must be"):
        count([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5], "score": 1.0}])
    with pytest.raises(CocoDataError, match=r"2 detection\(s\) refer to image ids not in .*person_keypoints_val2017\.json \(5, 8\)"):
        count([{"image_id": i, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0} for i in (1, 5, 8)])


def test_missing_image_raises_on_load(coco_root):
    os.remove(coco_root / "val2017" / "000000000003.jpg")
    source = CocoKeypoints(coco_root)
    assert source.num_examples("val") == 4  # indexing needs no image
    source.load("val", 0)
    with pytest.raises(UnreadableImageError, match=r"val2017/000000000003\.jpg does not exist"):
        source.load("val", 2)


def test_evaluate_errors(gt_file, tmp_path):
    kps, ids, scores, areas = predictions(PERSONS, [(0, 0)] * 3, [0.9, 0.8, 0.7])
    with pytest.raises(ValueError, match="no pose predictions"):
        evaluate_keypoints(kps[:0], ids[:0], scores[:0], areas[:0], gt_file)
    with pytest.raises(ValueError, match=r"keypoints must be \(N, 17, 3\)"):
        evaluate_keypoints(kps[:, :16], ids, scores, areas, gt_file)
    with pytest.raises(ValueError, match=r"box_scores must be \(3,\)"):
        evaluate_keypoints(kps, ids, scores[:2], areas, gt_file)
    with pytest.raises(ValueError, match=r"1 image id\(s\) not in .*gt\.json: 42"):
        evaluate_keypoints(kps, np.array([1, 2, 42]), scores, areas, gt_file)
    detections_file = write_json(tmp_path / "det.json", [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    with pytest.raises(CocoDataError, match="is not a COCO keypoints annotation file"):
        evaluate_keypoints(kps, ids, scores, areas, detections_file)
