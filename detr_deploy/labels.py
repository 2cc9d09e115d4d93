# SPDX-License-Identifier: Apache-2.0
"""Label names. Torch-free: the runtime reads these when an artifact carries no id2label."""
from __future__ import annotations

# COCO detection: logit index = COCO category id (1..90); unused ids are "N/A", as in the
# official repositories and in Hugging Face's id2label for facebook/detr-* and SenseTime/*.
_COCO_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}

COCO_ID2LABEL: dict[int, str] = {i: _COCO_NAMES.get(i, "N/A") for i in range(91)}

# COCO panoptic "stuff" categories (ids 92..200); things are the detection categories above. DETR panoptic has 250
# classes ("max id + 1" with room to spare, as published); unused ids are "N/A".
_COCO_STUFF_NAMES = {
    92: "banner", 93: "blanket", 95: "bridge", 100: "cardboard", 107: "counter", 109: "curtain", 112: "door-stuff",
    118: "floor-wood", 119: "flower", 122: "fruit", 125: "gravel", 128: "house", 130: "light", 133: "mirror-stuff",
    138: "net", 141: "pillow", 144: "platform", 145: "playingfield", 147: "railroad", 148: "river", 149: "road",
    151: "roof", 154: "sand", 155: "sea", 156: "shelf", 159: "snow", 161: "stairs", 166: "tent", 168: "towel",
    171: "wall-brick", 175: "wall-stone", 176: "wall-tile", 177: "wall-wood", 178: "water-other",
    180: "window-blind", 181: "window-other", 184: "tree-merged", 185: "fence-merged", 186: "ceiling-merged",
    187: "sky-other-merged", 188: "cabinet-merged", 189: "table-merged", 190: "floor-other-merged",
    191: "pavement-merged", 192: "mountain-merged", 193: "grass-merged", 194: "dirt-merged", 195: "paper-merged",
    196: "food-other-merged", 197: "building-other-merged", 198: "rock-merged", 199: "wall-other-merged",
    200: "rug-merged",
}
COCO_PANOPTIC_STUFF_IDS: tuple[int, ...] = tuple(sorted(_COCO_STUFF_NAMES))
COCO_PANOPTIC_ID2LABEL: dict[int, str] = {i: _COCO_NAMES.get(i) or _COCO_STUFF_NAMES.get(i, "N/A")
                                          for i in range(250)}


def default_id2label(num_classes: int) -> dict[int, str]:
    """COCO names for the 91-class detection and 250-class panoptic layouts, else generic names ``class_<i>``."""
    if num_classes == 91:
        return dict(COCO_ID2LABEL)
    if num_classes == 250:
        return dict(COCO_PANOPTIC_ID2LABEL)
    return {i: f"class_{i}" for i in range(num_classes)}


# detr-deploy's rendered shapes scenes (detr_deploy/zoo/shapes): category id = index
SHAPES = ("circle", "square", "triangle", "star")
SHAPE_COLOURS = ("red", "blue")
SHAPES_CATEGORIES = tuple(f"{colour} {shape}" for colour in SHAPE_COLOURS for shape in SHAPES)
# their panoptic version adds "stuff" regions, ids after the things
SHAPES_STUFF = ("sky", "ground", "wall")
SHAPES_PANOPTIC_CATEGORIES = SHAPES_CATEGORIES + SHAPES_STUFF
SHAPES_STUFF_IDS = tuple(range(len(SHAPES_CATEGORIES), len(SHAPES_PANOPTIC_CATEGORIES)))
