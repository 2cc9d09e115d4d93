# SPDX-License-Identifier: Apache-2.0
"""Typed errors. Every one carries a message that names the problem and the fix.

The CLI prints ``DetrDeployError`` messages without a traceback; anything else is a bug.
This module is imported by the runtime, so it must stay free of torch.
"""


class DetrDeployError(Exception):
    """Base class of every error detr-deploy raises on purpose."""


class UnknownModelError(DetrDeployError, ValueError):
    """A model name that is neither a registered variant nor a checkpoint path or Hub id."""


class CheckpointError(DetrDeployError, ValueError):
    """A file that is not a readable checkpoint (corrupt, truncated, wrong kind of file)."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose keys or shapes do not fit the model being built."""


class WeightsUnavailableError(DetrDeployError, RuntimeError):
    """Published weights that cannot be had here (offline, no Hub access)."""


class MissingDependencyError(DetrDeployError, ImportError):
    """An optional package is missing; the message names the extra to install."""


class ConfigError(DetrDeployError, ValueError):
    """An impossible or inconsistent model or command configuration."""


class ArtifactError(DetrDeployError, ValueError):
    """An ONNX file or engine that cannot be used (missing metadata, wrong GPU, missing plugin...)."""


class ImageError(DetrDeployError, ValueError):
    """An input image that cannot be read or used."""


class ServingError(DetrDeployError, RuntimeError):
    """A Triton server that cannot be found, started or reached, or that refused a request."""
