"""Inference Sovereignty Tracker: the domain core shared by every process."""

__version__ = "0.1.0"
