"""The official top-down HRNet COCO keypoint recipe (deep-high-resolution-net.pytorch,
`experiments/coco/hrnet/w{32,48}_{256x192,384x288}_adam_lr1e-3.yaml`).

Run (VARIANT: w32_256x192, w32_384x288, w48_256x192 or w48_384x288; the backbone starts from the
official ImageNet weights):

    python experiments/train.py --config experiments/configs/coco_pose.py:w32_256x192 \\
        --workdir runs/coco_w32_256x192 --config.dataset=coco:/data/coco \\
        --config.pose_detections=/data/coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json

`dataset`: `coco:<root>` with `annotations/person_keypoints_{train,val}2017.json` and the images in
`train2017/`, `val2017/` (or `images/train2017/`, ...). `pose_detections`: the official person
detection results (56 AP) for the val boxes; without it the val crops come from the ground-truth
boxes (the official `USE_GT_BBOX`, which scores about 2 AP higher).

Recipe: the 149,813 train person instances, 210 epochs at global batch 128 (W48 384x288: 96), Adam lr
1e-3 without weight decay, x0.1 at epochs 170 and 200; crops of the box (aspect-corrected, x1.25)
with random scale 0.65-1.35, rotation within +-90 degrees (probability 0.6), flips with the joint
pairs swapped and half-body crops (probability 0.3); MSRA Gaussian targets of sigma 2 (256x192) or
3 (384x288); the official target-weighted MSE; float32. Evaluation: flip test with the 1-px shift,
the official rescoring and OKS-NMS 0.9, COCO keypoint AP (pycocotools). Should reach COCO val AP
74.4 (W32 256x192), 75.8 (W32 384x288), 75.1 (W48 256x192) and 76.3 (W48 384x288) with the
detection boxes (the official README); not yet reproduced with this code.
"""

from hrnet_flax.train.config import TrainConfig

VARIANTS = ("w32_256x192", "w32_384x288", "w48_256x192", "w48_384x288")


def get_config(variant: str = "w32_256x192") -> TrainConfig:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")
    width, size = variant.split("_")
    height, crop_width = (int(v) for v in size.split("x"))
    large = height == 384
    batch = 96 if (width == "w48" and large) else 128
    return TrainConfig(
        task="pose",
        model=f"pose_hrnet_{width}",
        num_classes=17,
        pretrained=f"hrnet_{width}.ms_in1k",  # the official ImageNet weights (timm's copy)
        dtype="float32",
        dataset="coco",  # coco:<root>
        crop_size=(height, crop_width),
        pose_codec="msra",
        pose_sigma=3.0 if large else 2.0,
        pose_scale_factor=0.35,
        pose_rotation_factor=45.0,
        pose_rotation_prob=0.6,
        pose_flip=True,
        pose_half_body_prob=0.3,
        eval_flip=True,
        pose_shift_heatmap=True,
        global_batch_size=batch,
        eval_batch_size=128,
        optimizer="adam",
        base_lr=1e-3,
        base_batch_size=batch,
        weight_decay=0.0,
        epochs=210,
        schedule="piecewise",
        decay_epochs=(170, 200),
        decay_factor=0.1,
        log_every_steps=100,
        eval_every_steps=20000,
        checkpoint_every_steps=2000,
        keep_checkpoints=2,
    )
