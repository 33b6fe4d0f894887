"""A subset scheme of a trained model's points (the 51-point variant of a 68-point model)."""

import numpy as np
import pytest

from fld.schemes import get_scheme, subset_indices


def test_subset_indices_68_to_51_drop_the_jaw():
    indices = subset_indices(get_scheme("300w_68"), get_scheme("pair_51"))
    np.testing.assert_array_equal(indices, np.arange(17, 68))
    with pytest.raises(ValueError, match="not a subset"):
        subset_indices(get_scheme("300w_68"), get_scheme("wflw_98"))


def test_select_points_keeps_the_subset_channels_exactly():
    from fld.models import LandmarkDetector, select_points

    model = LandmarkDetector("mobilevitv2_050", image_size=64, scheme="300w_68")
    subset = select_points(model, "pair_51")
    assert subset.scheme.name == "pair_51"
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    full = np.asarray(model(images)["fused"])
    part = np.asarray(subset(images)["fused"])
    assert part.shape == full.shape[:3] + (51,)
    np.testing.assert_allclose(part, full[..., 17:], rtol=1e-5, atol=1e-6)
