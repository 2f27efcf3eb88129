"""Embedded segmentation demo: hrnetv2_w18_small_seg on canvases of scikit-learn digits (no download).

Run:  python experiments/train.py --config experiments/configs/demo_segmentation.py --workdir /tmp/seg_demo
  or  python -m hrnet_flax demo --task segmentation
64x64 canvases with a few digits each (`hrnet_flax.data.canvases`): 11 classes (background and one per
digit), every digit drawn in the same ink, so a pixel's own colour tells ink from background but not
which digit (predicting from it alone scores under 20% mIoU). Should reach >= 60% val mIoU in a few
minutes on two CPU cores (see `segmentation_demo_config` for the recipe and the measured figure).
"""

from hrnet_flax.train.config import TrainConfig, segmentation_demo_config


def get_config() -> TrainConfig:
    return segmentation_demo_config()
