# SPDX-License-Identifier: Apache-2.0
"""Deployment runtime: numpy + pillow only (never torch or timm), so it installs light on edge devices."""
