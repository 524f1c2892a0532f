"""Polygons to pixels: the door zone and the privacy masks."""

import numpy as np
import pytest

from edgecam.zones import burn_masks, polygon_mask

LEFT = [(0.1, 0.1), (0.6, 0.1), (0.6, 0.6), (0.1, 0.6)]
RIGHT = [(0.4, 0.4), (0.9, 0.4), (0.9, 0.9), (0.4, 0.9)]
"""Two masks that overlap over (0.4..0.6, 0.4..0.6)."""


@pytest.mark.parametrize("shape", [(100, 100), (100, 100, 3)], ids=["grey", "colour"])
def test_where_two_privacy_masks_overlap_the_still_is_black_too(shape: tuple[int, ...]) -> None:
    image = np.full(shape, 200, np.uint8)
    burnt = burn_masks(image, [LEFT, RIGHT])
    for x, y in [(20, 20), (80, 80), (50, 50)]:  # the left mask, the right one, and both
        assert not burnt[y, x].any(), (x, y)
    assert (burnt[90, 10] == 200).all()  # outside both
    assert (image == 200).all(), "the source image is left as it was"


def test_where_two_polygons_overlap_they_are_in_the_mask() -> None:
    mask = polygon_mask([LEFT, RIGHT, LEFT], 100, 100)
    assert mask[20, 20]
    assert mask[80, 80]
    assert mask[50, 50]
    assert not mask[90, 10]
