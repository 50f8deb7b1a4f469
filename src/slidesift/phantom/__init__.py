"""Phantom cohorts: synthetic H&E-like whole-slide images with exact ground truth.

See :func:`plan_slide` (where things are), :func:`render_block` / :func:`write_slide` (pixels),
and :func:`make_cohort` (slides, masks, XML, GeoJSON and a manifest in one folder).
"""

from slidesift.phantom.he_like import he_like_image
from slidesift.phantom.plan import plan_slide
from slidesift.phantom.render import (
    render_block,
    render_image,
    tumor_block,
    write_mask,
    write_slide,
)
from slidesift.phantom.slide_layout import ARTIFACTS, REGIMES, SUBTYPES, SlideLayout

__all__ = [
    "ARTIFACTS",
    "REGIMES",
    "SUBTYPES",
    "SlideLayout",
    "he_like_image",
    "plan_slide",
    "render_block",
    "render_image",
    "tumor_block",
    "write_mask",
    "write_slide",
]
