"""Polygons to pixels: the door zone and the privacy masks."""

import numpy as np
import pytest

from edgecam.zones import burn_masks, burn_masks_i420, polygon_mask

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


def test_an_i420_still_is_black_under_its_masks_and_has_no_colour_left_along_their_edges() -> None:
    height, width = 100, 100
    i420 = np.empty((height * 3 // 2, width), np.uint8)
    i420[:height] = 200
    i420[height : height + height // 4] = 60  # Cb: a strong colour
    i420[height + height // 4 :] = 190  # Cr
    odd = [(0.05, 0.75), (0.25, 0.75), (0.25, 0.95), (0.05, 0.95)]  # from pixel 5 to 25: half blocks at its edges
    burnt = burn_masks_i420(i420, [LEFT, RIGHT, odd])
    masked = polygon_mask([LEFT, RIGHT, odd], width, height)
    assert (burnt[:height][masked] == 0).all()
    assert (burnt[:height][~masked] == 200).all()
    touched = masked.reshape(height // 2, 2, width // 2, 2).any(axis=(1, 3))
    assert touched.sum() * 4 > masked.sum(), "some 2 x 2 blocks lie only partly under a mask"
    for plane, colour in zip(burnt[height:].reshape(2, height // 2, width // 2), (60, 190), strict=True):
        assert (plane[touched] == 128).all()  # neutral: black in full-range YCbCr
        assert (plane[~touched] == colour).all()
    assert (i420[:height] == 200).all(), "the source image is left as it was"


def test_an_i420_still_of_an_odd_size_is_refused_with_its_size() -> None:
    with pytest.raises(ValueError, match="101x150"):
        burn_masks_i420(np.zeros((150, 101), np.uint8), [LEFT])
