# SPDX-License-Identifier: Apache-2.0
"""The contract between the repository writer, the Python-backend models and the client: tensor names, the
parameters the ensemble publishes, and how an unreadable image is reported. Pure Python.

The ensemble ``NAME`` (one batch element = one image):
  inputs   IMAGE            TYPE_STRING [1]   encoded image bytes (JPEG, PNG, ... anything Pillow reads)
           THRESHOLD        TYPE_FP32   [1]   optional; keep detections with score > threshold (default: the
                                              ``default_threshold`` parameter)
  outputs  BOXES            TYPE_FP32   [K, 4] xyxy in original-image pixels, highest score first
           SCORES           TYPE_FP32   [K]
           LABELS           TYPE_INT64  [K]   class ids (-1 in the padding)
           NAMES            TYPE_STRING [K]   class names (b"" in the padding)
           NUM_DETECTIONS   TYPE_INT32  [1]   how many of the K rows are real: one request's images are padded to
                                              the largest K among them
The outputs depend on the ensemble's ``task`` parameter. "detection" (every detection artifact, and a segmentation
artifact served for boxes): the five above. "panoptic" / "instance" (segmentation artifacts, DETR panoptic):
           SEGMENTATION     TYPE_INT32  [H, W] the segment id of every pixel of the original image (0: none);
                                              one request's maps are padded with 0 to its largest image
           SEGMENTS         TYPE_STRING [1]   JSON {"height", "width", "segments_info": [{"id", "label_id",
                                              "score", ("was_fused")}], "names": [...]}: the local Detector's
                                              dict, the map cropped to height x width
Clients read outputs by name.
"""
from __future__ import annotations

IMAGE = "IMAGE"
THRESHOLD = "THRESHOLD"
BOXES, SCORES, LABELS, NAMES, NUM_DETECTIONS = "BOXES", "SCORES", "LABELS", "NAMES", "NUM_DETECTIONS"
DETECTION_OUTPUTS = (BOXES, SCORES, LABELS, NAMES, NUM_DETECTIONS)
SEGMENTATION, SEGMENTS = "SEGMENTATION", "SEGMENTS"
SEGMENTATION_OUTPUTS = (SEGMENTATION, SEGMENTS)
SEGMENTATION_TASKS = ("panoptic", "instance")  # what a segmentation ensemble serves besides "detection"


def outputs_for(task: str) -> tuple[str, ...]:
    """The ensemble's output names for its ``task``."""
    return SEGMENTATION_OUTPUTS if task in SEGMENTATION_TASKS else DETECTION_OUTPUTS


# between the steps: the artifact's own tensor names (Triton's native backends bind tensors by graph name)
PIXEL_VALUES, PIXEL_MASK = "pixel_values", "pixel_mask"
LOGITS, PRED_BOXES, PRED_MASKS = "logits", "pred_boxes", "pred_masks"
ORIGINAL_SIZE = "original_size"  # [2] int32 (height, width) of the decoded image
RESIZED_SIZE = "resized_size"  # [2] int32 (height, width) after resizing, before padding (segmentation: mask crop)

# the file next to each Python model's model.py that holds the artifact's metadata document
METADATA_FILE = "artifact.json"

# an error response for an input that is not a usable image starts with this, then "image I: problem"
UNREADABLE = "unreadable input"

# ensemble config parameters clients read (get_model_config)
PARAM_ID2LABEL = "id2label"  # JSON {"0": "name", ...}
PARAM_MAX_IMAGES = "max_images_per_request"
PARAM_DEFAULT_THRESHOLD = "default_threshold"
PARAM_VARIANT = "variant"
PARAM_TASK = "task"  # "detection", "panoptic" or "instance": what the ensemble outputs
PARAM_STUFF_IDS = "stuff_ids"  # JSON [ids]: the segmentation artifact's stuff classes (fused in panoptic maps)
PARAM_MASK_THRESHOLD = "mask_threshold"
PARAM_OVERLAP_THRESHOLD = "overlap_mask_area_threshold"
PARAM_MODEL = "model_name"  # the NAME_model step, whose statistics show the batches Triton formed
