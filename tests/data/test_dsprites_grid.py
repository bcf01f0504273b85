"""The procedural dSprites' orientation grid is the original's, linspace(0, 2 pi, 40): its 40 angles
are 39 distinct ones plus 2 pi, which draws the same image as 0. (A grid of 2 pi i / 40 would give the
square, symmetric under a quarter turn, only 10 distinct images among its 40 orientations.)"""

import math

import torch

from aezoo.data.dsprites import DSprites

GRID = DSprites()


def orientations(shape: int, scale: int, x: int, y: int) -> torch.Tensor:
    """The 40 images (40, 64 * 64) of one shape, scale and position, one per orientation."""
    return GRID.images(torch.tensor([[shape, scale, o, x, y] for o in range(40)])).flatten(1)


def distinct(images: torch.Tensor) -> int:
    return len(torch.unique(images, dim=0))


def test_orientation_values_are_linspace_0_to_2pi_inclusive():
    assert torch.allclose(GRID.values("orientation"), torch.linspace(0, 2 * math.pi, 40))


def test_every_orientation_but_the_end_point_draws_a_distinct_image():
    for shape in range(3):  # largest scale, centre of the frame: 39 distinct angles for every shape
        img = orientations(shape, 5, 16, 16)
        assert torch.equal(img[0], img[39]), GRID.shapes[shape]  # 2 pi draws as 0, as in the original
        assert distinct(img) == 39, GRID.shapes[shape]
    # the angle 2 pi rounded to float32 is not 0: rotating by it moves one pixel of this heart's edge
    end = GRID.images(torch.tensor([[2, 4, 0, 11, 9], [2, 4, 39, 11, 9]]))
    assert torch.equal(end[0], end[1])


def test_the_square_has_more_than_ten_images_at_every_scale_and_position():
    for scale in range(6):
        for x, y in ((0, 0), (16, 16), (31, 7)):
            img = orientations(0, scale, x, y)
            assert torch.equal(img[0], img[39])
            # a quarter turn maps the square onto itself: 10 distinct images at most on a 2 pi / 40 grid
            assert distinct(img) > 20, (scale, x, y)
