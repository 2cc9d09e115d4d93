# SPDX-License-Identifier: Apache-2.0
"""Checkpoint reading, format detection and conversion (official <-> Hugging Face <-> ours), Hub download."""
from .architecture import infer_config
from .convert import detect_family, detect_layout, hf_to_official, official_to_ours, ours_to_official, to_ours
from .io import Checkpoint, read_checkpoint
from .load import LoadReport, load_checkpoint

__all__ = ["Checkpoint", "LoadReport", "detect_family", "detect_layout", "hf_to_official", "infer_config",
           "load_checkpoint", "official_to_ours", "ours_to_official", "read_checkpoint", "to_ours"]
