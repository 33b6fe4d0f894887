"""Loss of the Anisotropic Attention Module's point and edge branches.

ADNet (Huang et al., "ADNet: Leveraging Error-Bias Towards Normal Direction in Face
Alignment", ICCV 2021) supervises the AAM's point maps with the landmark heatmaps and its
edge maps with the boundary maps, each through Adaptive Wing (METHOD.md section 5):

    L_AAM = point_weight * AWing(points, target heatmaps)
          + edge_weight  * AWing(edges,  target edges)          (weights 10 and 10)
"""

from __future__ import annotations

import keras
from keras import ops

from fld.losses.awing import AdaptiveWingLoss


@keras.saving.register_keras_serializable(package="fld")
class AAMLoss:
    """L_AAM on the model's output dict and the pipeline's target dict.

    ``loss(targets, outputs)`` gives the batch mean; ``loss.per_sample(targets, outputs)``
    gives one value per sample (shape (B,)) for distribution-aware reduction.
    Uses ``targets['heatmaps']`` (B,H,W,K), ``targets['edges']`` (B,H,W,E),
    ``outputs['points']`` (B,H,W,K) and ``outputs['edges']`` (B,H,W,E).

    Args:
        point_weight: weight of the point-map AWing term (10).
        edge_weight: weight of the edge-map AWing term (10).
        awing: config dict for the ``AdaptiveWingLoss`` used by both terms (defaults if None).
    """

    def __init__(self, point_weight=10.0, edge_weight=10.0, awing=None):
        self.point_weight = float(point_weight)
        self.edge_weight = float(edge_weight)
        self.awing_config = dict(awing or {})
        self.awing = AdaptiveWingLoss(**self.awing_config)

    def per_sample(self, targets, outputs):
        points = self.awing.call(targets["heatmaps"], outputs["points"])
        edges = self.awing.call(targets["edges"], outputs["edges"])
        return self.point_weight * points + self.edge_weight * edges

    def __call__(self, targets, outputs):
        return ops.mean(self.per_sample(targets, outputs))

    def get_config(self):
        return {
            "point_weight": self.point_weight,
            "edge_weight": self.edge_weight,
            "awing": self.awing_config,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
