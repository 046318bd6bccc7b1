"""crop_box: DeepDetect's crop action (padding, square, fixed and minimum sizes), clamped to the image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage import data

from simsearch.errors import BadInput
from simsearch.input import Crop, crop_box

IMAGE = data.astronaut()  # 512 x 512 RGB
GRAY = data.camera()  # 512 x 512


def test_a_box_is_copied_exactly() -> None:
    crop = crop_box(IMAGE, (100, 50, 200, 90))
    assert crop is not None
    assert crop.shape == (40, 100, 3)
    np.testing.assert_array_equal(crop, IMAGE[50:90, 100:200])
    assert crop.flags.c_contiguous
    assert not np.shares_memory(crop, IMAGE)


def test_a_full_width_crop_is_a_copy_too() -> None:
    crop = crop_box(GRAY, (0, 10, 512, 20))
    assert crop is not None
    assert crop.shape == (10, 512)
    crop[:] = 0
    assert GRAY[10:20].any()


def test_fractional_boxes_round_to_the_nearest_pixel() -> None:
    crop = crop_box(IMAGE, (10.4, 20.6, 30.5, 40.2))
    assert crop is not None
    assert crop.shape == (19, 21, 3)  # x 10..31, y 21..40


def test_padding_grows_each_side_by_a_ratio_of_the_box() -> None:
    crop = crop_box(IMAGE, (100, 100, 200, 150), Crop(padding_ratio=0.1))
    assert crop is not None
    np.testing.assert_array_equal(crop, IMAGE[95:155, 90:210])


def test_force_square_grows_the_shorter_side_on_the_same_centre() -> None:
    crop = crop_box(IMAGE, (100, 100, 200, 140), Crop(force_square=True))
    assert crop is not None
    np.testing.assert_array_equal(crop, IMAGE[70:170, 100:200])
    tall = crop_box(IMAGE, (100, 100, 120, 180), Crop(force_square=True))
    assert tall is not None
    assert tall.shape[:2] == (80, 80)
    np.testing.assert_array_equal(tall, IMAGE[100:180, 70:150])


def test_padding_then_square() -> None:
    crop = crop_box(IMAGE, (100, 100, 200, 140), Crop(padding_ratio=0.5, force_square=True))
    assert crop is not None
    assert crop.shape[:2] == (200, 200)  # 200 x 80 padded, then 200 x 200 around centre (150, 120)
    np.testing.assert_array_equal(crop, IMAGE[20:220, 50:250])


def test_fixed_sizes_centre_a_box_of_exactly_that_size() -> None:
    crop = crop_box(IMAGE, (100, 100, 140, 120), Crop(fixed_width=64, fixed_height=32))
    assert crop is not None
    np.testing.assert_array_equal(crop, IMAGE[94:126, 88:152])
    only_width = crop_box(IMAGE, (100, 100, 140, 120), Crop(fixed_width=10, padding_ratio=0.5))
    assert only_width is not None
    assert only_width.shape[:2] == (40, 10)  # the height is padded, the width fixed


def test_fixed_sizes_win_over_padding_and_square() -> None:
    crop = crop_box(
        IMAGE, (200, 200, 300, 220), Crop(fixed_width=50, fixed_height=40, padding_ratio=1.0, force_square=True)
    )
    assert crop is not None
    assert crop.shape[:2] == (40, 50)


def test_small_boxes_are_dropped() -> None:
    box = (10, 10, 40, 30)  # 30 x 20
    assert crop_box(IMAGE, box, Crop(min_width=31)) is None
    assert crop_box(IMAGE, box, Crop(min_height=21)) is None
    kept = crop_box(IMAGE, box, Crop(min_width=30, min_height=20, padding_ratio=1.0))
    assert kept is not None  # the box itself is measured, not the padded crop
    assert kept.shape[:2] == (50, 70)  # padded to y -10..50 and x -20..70, clamped


def test_a_box_partly_outside_is_clamped() -> None:
    crop = crop_box(IMAGE, (-50, 480, 30, 600))
    assert crop is not None
    np.testing.assert_array_equal(crop, IMAGE[480:512, 0:30])
    padded = crop_box(IMAGE, (500, 0, 512, 10), Crop(padding_ratio=1.0))
    assert padded is not None
    assert padded.shape[:2] == (20, 24)  # x 488..524 -> 488..512, y -10..20 -> 0..20


def test_a_box_wholly_outside_or_empty_gives_none() -> None:
    assert crop_box(IMAGE, (600, 10, 700, 50)) is None
    assert crop_box(IMAGE, (-100, -100, -10, -10)) is None
    assert crop_box(IMAGE, (10, 10, 10, 50)) is None  # no width
    assert crop_box(IMAGE, (50, 10, 10, 50)) is None  # xmax < xmin
    assert crop_box(IMAGE, (512, 0, 600, 100)) is None  # touches the right edge only


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("padding_ratio", -0.1),
        ("padding_ratio", math.nan),
        ("padding_ratio", math.inf),
        ("fixed_width", -1),
        ("fixed_height", -5),
        ("min_width", -1),
        ("min_height", math.inf),
    ],
)
def test_bad_parameters_are_refused(field: str, value: float) -> None:
    with pytest.raises(BadInput, match="finite number >= 0") as info:
        crop_box(IMAGE, (0, 0, 10, 10), Crop(**{field: value}))
    assert info.value.field == field


@pytest.mark.parametrize("box", [(0, 0, 10), (0, 0, 10, math.nan), (0, -math.inf, 10, 10)])
def test_bad_boxes_are_refused(box: tuple[float, ...]) -> None:
    with pytest.raises(BadInput, match="four finite numbers") as info:
        crop_box(IMAGE, box)
    assert info.value.field == "box"
