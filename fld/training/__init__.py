"""Training: the LandmarkTrainer (supervised stage 1 and distillation stage 2 in one class)."""

from fld.training.landmark_trainer import LandmarkTrainer

__all__ = ["LandmarkTrainer"]
