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
Segmentation artifacts will add outputs (masks) next to these; clients read outputs by name.
"""
from __future__ import annotations

IMAGE = "IMAGE"
THRESHOLD = "THRESHOLD"
BOXES, SCORES, LABELS, NAMES, NUM_DETECTIONS = "BOXES", "SCORES", "LABELS", "NAMES", "NUM_DETECTIONS"
DETECTION_OUTPUTS = (BOXES, SCORES, LABELS, NAMES, NUM_DETECTIONS)

# between the steps: the artifact's own tensor names (Triton's native backends bind tensors by graph name)
PIXEL_VALUES, PIXEL_MASK = "pixel_values", "pixel_mask"
LOGITS, PRED_BOXES = "logits", "pred_boxes"
ORIGINAL_SIZE = "original_size"  # [2] int32 (height, width) of the decoded image

# the file next to each Python model's model.py that holds the artifact's metadata document
METADATA_FILE = "artifact.json"

# an error response for an input that is not a usable image starts with this, then "image I: problem"
UNREADABLE = "unreadable input"

# ensemble config parameters clients read (get_model_config)
PARAM_ID2LABEL = "id2label"  # JSON {"0": "name", ...}
PARAM_MAX_IMAGES = "max_images_per_request"
PARAM_DEFAULT_THRESHOLD = "default_threshold"
PARAM_VARIANT = "variant"
PARAM_TASK = "task"
PARAM_MODEL = "model_name"  # the NAME_model step, whose statistics show the batches Triton formed
