"""Training: the Distiller (supervised stage 1 and distillation stage 2 in one class)."""

from fld.training.distiller import Distiller, inter_ocular_nme

__all__ = ["Distiller", "inter_ocular_nme"]
