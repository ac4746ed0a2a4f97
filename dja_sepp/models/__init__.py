"""Model definitions (YAML data) and parameter transforms."""
from .definition import ModelDefinition, detection_context, load_model
from .transforms import Range

__all__ = ["ModelDefinition", "load_model", "detection_context", "Range"]
