"""gradcam-kit: the instructor's tools for the TP2 Grad-CAM nbgrader course."""

__version__ = "0.1.0"
