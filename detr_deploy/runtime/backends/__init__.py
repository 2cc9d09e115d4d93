# SPDX-License-Identifier: Apache-2.0
"""Inference backends behind one interface: name-based numpy feeds in, ``{output name: array}`` out."""
from .base import Backend

__all__ = ["Backend"]
