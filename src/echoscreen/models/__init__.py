"""Models: the view classifier, the RHD video model, study aggregation, the builder registry.

``create_model(name, ModelConfig(size=...))`` builds "view" or "rhd" (see
:data:`MODEL_BUILDERS`); ``to_input`` turns stored uint8 clips into network input;
``aggregate`` gives the mean / vote / max baselines; ``export_onnx`` (in
``echoscreen.models.onnx``) writes an ONNX file checked against torch. See docs/models.md.
"""

from __future__ import annotations

from echoscreen.models.aggregate import AGGREGATIONS, aggregate
from echoscreen.models.config import ARCHS, LABELS, RHD_VIEWS, VIEWS, Arch, ModelConfig
from echoscreen.models.layers import to_input
from echoscreen.models.registry import MODEL_BUILDERS, count_parameters, create_model
from echoscreen.models.rhd import RHDNet
from echoscreen.models.view import ViewNet

__all__ = [
    "AGGREGATIONS",
    "ARCHS",
    "LABELS",
    "MODEL_BUILDERS",
    "RHD_VIEWS",
    "VIEWS",
    "Arch",
    "ModelConfig",
    "RHDNet",
    "ViewNet",
    "aggregate",
    "count_parameters",
    "create_model",
    "to_input",
]
