"""Upstream's `test_driver.machine.ocr`: OCR of a screenshot file.

ntd reads screens natively (`machine.get_screen_text()`, `wait_for_text`); these functions
give a script that took a screenshot itself the same reading. The variants are ntd's
(normalized grayscale at twice the size, at its size, and the image as it is), recognised at
once; tesseract missing is a `MachineError`, as upstream.
"""

import os

from ntd import _native

__all__ = ["perform_ocr_on_screenshot", "perform_ocr_variants_on_screenshot"]


def perform_ocr_on_screenshot(screenshot_path: "str | os.PathLike[str]") -> str:
    """The text of the screenshot, from ntd's first variant."""
    (text,) = _native.ocr_screenshot(os.fspath(screenshot_path), False)
    return text


def perform_ocr_variants_on_screenshot(screenshot_path: "str | os.PathLike[str]", variants: bool = True) -> list[str]:
    """The texts of every variant of the screenshot (only the first with `variants=False`)."""
    return _native.ocr_screenshot(os.fspath(screenshot_path), variants)
