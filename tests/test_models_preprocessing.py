"""How an image becomes network input: the size it is fed at, and the resize itself."""

from __future__ import annotations

import numpy as np
import pytest

from models.preprocessing import (
    DEFAULT_INPUT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_ASPECT,
    SIZE_MULTIPLE,
    network_input_size,
    prepare_image,
)
from models.spec import ModelSpec


@pytest.mark.parametrize("image_size", [(240, 427), (480, 854), (720, 1280), (1080, 1920)])
def test_16_by_9_video_is_fed_at_the_papers_size(image_size):
    """DAVIS and phone video are 16:9: keeping the aspect changes nothing for them."""
    assert network_input_size(image_size, DEFAULT_INPUT_SIZE, keep_aspect=True) == DEFAULT_INPUT_SIZE


@pytest.mark.parametrize("image_size", [(300, 400), (400, 300), (267, 400), (1920, 1080), (500, 500), (101, 397)])
def test_kept_aspect_keeps_the_pixel_count_and_the_shape(image_size):
    height, width = network_input_size(image_size, DEFAULT_INPUT_SIZE, keep_aspect=True)
    assert height % SIZE_MULTIPLE == 0 and width % SIZE_MULTIPLE == 0
    trained = DEFAULT_INPUT_SIZE[0] * DEFAULT_INPUT_SIZE[1]
    assert abs(height * width - trained) / trained < 0.15
    assert (width / height) == pytest.approx(image_size[1] / image_size[0], rel=0.15)
    # a portrait image is fed as the transposed landscape one
    assert network_input_size(image_size[::-1], DEFAULT_INPUT_SIZE, keep_aspect=True) == (width, height)


def test_extreme_aspect_is_clamped_and_stretch_mode_is_the_fixed_size():
    height, width = network_input_size((100, 4000), DEFAULT_INPUT_SIZE, keep_aspect=True)
    assert width / height < MAX_ASPECT * 1.1 and height >= 4 * SIZE_MULTIPLE
    assert network_input_size((300, 200), (64, 96), keep_aspect=False) == (64, 96)
    assert ModelSpec("unet", {"num_regions": 4}).input_size_for((300, 200)) == DEFAULT_INPUT_SIZE  # old specs stretch
    assert ModelSpec("unet", {"num_regions": 4}, keep_aspect=True).input_size_for((300, 200)) == (208, 144)


def _disk_extent(network_input: np.ndarray) -> tuple[int, int]:
    """Rows and columns covered by the bright disk of an input made by :func:`prepare_image`."""
    rgb = network_input.transpose(1, 2, 0) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    bright = rgb.mean(axis=-1) > 0.5
    return int(bright.any(axis=1).sum()), int(bright.any(axis=0).sum())


def test_a_round_object_in_a_portrait_photo_stays_round():
    """Stretched to 128×224, a disk in a 3:2 portrait photo becomes an ellipse 2.6× wider than high;
    fed in its own aspect ratio it stays a disk, as the network saw objects in training."""
    image = np.zeros((300, 200, 3), np.uint8)
    rows, columns = np.ogrid[:300, :200]
    image[(rows - 150) ** 2 + (columns - 100) ** 2 < 60 ** 2] = 255
    kept = _disk_extent(prepare_image(image, network_input_size(image.shape[:2], keep_aspect=True)))
    stretched = _disk_extent(prepare_image(image, network_input_size(image.shape[:2], keep_aspect=False)))
    assert kept[1] / kept[0] == pytest.approx(1.0, abs=0.1)
    assert stretched[1] / stretched[0] > 2.3
