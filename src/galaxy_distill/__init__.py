"""galaxy_distill: see what a neural network sees in galaxy images by dataset distillation."""

__version__ = "0.1.0"
