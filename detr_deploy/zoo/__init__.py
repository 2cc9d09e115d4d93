# SPDX-License-Identifier: Apache-2.0
"""Model zoo: the project's own small trained models and the scene renderer they were trained on."""
