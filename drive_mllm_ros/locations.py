"""Location tokens: an object's position written as one token per axis, its bin on a grid over the view.

`<c1,CAM_FRONT,114.4,74.4>` becomes `<c1,CAM_FRONT,<x16>,<y18>>` and "at (114.4, 74.4)" becomes
"at (<x16>, <y18>)", as Kosmos-2 and PaliGemma write boxes. A small language model copies a bin out of the image
token it attends to; decimal digits it does not learn to spell from the views (docs/STUDENT.md, runs 9-10).
Decoding gives the bin's centre. Pure Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .drivelm import NUMBER

LOCATION_PAIR = re.compile(r"<x(\d+)>(\s*,\s*)<y(\d+)>")
# The pairs that are positions: inside a tag (after its camera) or a listed object's "at (x, y)".
TAG_POINT = re.compile(rf"(<\s*c\d+\s*,\s*[A-Za-z_]+\s*,\s*)({NUMBER})(\s*,\s*)({NUMBER})(?=\s*>)")
AT_POINT = re.compile(rf"(\bat \()({NUMBER})(,\s*)({NUMBER})(?=\))")


def location_tokens(bins: int) -> list[str]:
    """The tokens a checkpoint with `bins` bins per axis needs: <x0>..<x{bins-1}>, <y0>..<y{bins-1}>."""
    return [f"<{axis}{index}>" for axis in "xy" for index in range(bins)]


@dataclass(frozen=True)
class LocationGrid:
    bins: int
    width: float  # the coordinate range the text uses (camera pixels)
    height: float

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ValueError(f"location_bins: expected at least 2 bins per axis, got {self.bins}")

    def settings(self) -> dict[str, object]:
        """As a checkpoint's drive_mllm.json keeps it (prompt.checkpoint_locations reads it back)."""
        return {"location_bins": self.bins, "location_extent": [self.width, self.height]}

    def bin(self, value: float, extent: float) -> int:
        return min(max(int(value / extent * self.bins), 0), self.bins - 1)

    def centre(self, index: int, extent: float) -> float:
        return (min(index, self.bins - 1) + 0.5) * extent / self.bins

    def to_tokens(self, text: str) -> str:
        """Decimal positions of tags and listed objects -> location tokens; other numbers stay."""
        def tokens(match: re.Match) -> str:
            x, y = float(match.group(2)), float(match.group(4))
            return (f"{match.group(1)}<x{self.bin(x, self.width)}>{match.group(3)}"
                    f"<y{self.bin(y, self.height)}>")
        return AT_POINT.sub(tokens, TAG_POINT.sub(tokens, text))

    def from_tokens(self, text: str) -> str:
        """Location tokens -> the decimal centres of their bins."""
        return LOCATION_PAIR.sub(lambda m: f"{self.centre(int(m.group(1)), self.width):.1f}{m.group(2)}"
                                           f"{self.centre(int(m.group(3)), self.height):.1f}", text)
