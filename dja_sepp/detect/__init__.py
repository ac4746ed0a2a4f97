"""Source detection on a tile's detection cutout.

:func:`detect_sources` runs ``sep`` with the predecessor's SourceXtractor++
settings and then applies what sep lacks (:mod:`.cleaning`): the core
threshold (a detection must hold ``core_minarea`` pixels above
``core_thresh`` sigma on the filtered image) and SE++'s cleaning (a
deblended child that keeps fewer than ``clean_minarea`` pixels above its
siblings' Moffat wings is merged into the most influential sibling).
Detections removed by either step are returned as a table of rejected rows
with their reason, never dropped silently. :mod:`.noise` measures the
noise correlation of drizzled images (empty-aperture statistics).
"""
from .cleaning import DetectionFlag
from .extract import DETECTION_COLUMNS, detect_sources, gaussian_kernel

__all__ = ["detect_sources", "gaussian_kernel", "DETECTION_COLUMNS", "DetectionFlag"]
