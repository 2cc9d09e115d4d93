# SPDX-License-Identifier: Apache-2.0
"""Training DETR-family models on rendered scenes (CPU-friendly): matcher, losses, data, loop."""
