# SPDX-License-Identifier: Apache-2.0
"""The accuracy gate (``detr-parity``): a PyTorch reference against exported artifacts on the same images.

``gate`` runs it (detection and segmentation artifacts), ``tolerances`` holds the limits; the metrics come from
``detr_deploy.compare`` and ``detr_deploy.evaluation``.
"""
from .gate import ArtifactReport, ParityCheck, check_model_fits, format_report
from .tolerances import ToleranceTable, load_tolerances

__all__ = ["ArtifactReport", "ParityCheck", "ToleranceTable", "check_model_fits", "format_report", "load_tolerances"]
