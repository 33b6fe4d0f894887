"""Training: the Distiller (supervised stage 1 and distillation stage 2 in one class)."""

from fld.training.distiller import Distiller, argmax_decode, inter_ocular_nme

__all__ = ["Distiller", "argmax_decode", "inter_ocular_nme"]
