"""Regions inside ``<LOC>``: the paper's JSON, ``{"box_2d": [y1, x1, y2, x2], "label": ...}`` or
``{"point": [y, x], "label": ...}`` on a 0-1000 grid, converted to and from pixels; invalid region
JSON is reported, never dropped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from medsage.scaffold.issues import ScaffoldIssue

GRID = 1000  # the paper's normalised coordinate grid


@dataclass(frozen=True)
class Region:
    """A box ``(y1, x1, y2, x2)`` or a point ``(y, x)`` on the 0-1000 grid, with an optional label."""

    kind: Literal["box", "point"]
    coords: tuple[int, ...]
    label: str | None = None

    def to_json(self) -> str:
        key = "box_2d" if self.kind == "box" else "point"
        obj: dict = {key: list(self.coords)}
        if self.label is not None:
            obj["label"] = self.label
        return json.dumps(obj, ensure_ascii=False)

    def to_pixels(self, width: int, height: int) -> tuple[float, ...]:
        """Pixel coordinates in image order: a box as ``(x1, y1, x2, y2)``, a point as ``(x, y)``."""
        if self.kind == "box":
            y1, x1, y2, x2 = self.coords
            return (x1 * width / GRID, y1 * height / GRID, x2 * width / GRID, y2 * height / GRID)
        y, x = self.coords
        return (x * width / GRID, y * height / GRID)

    @classmethod
    def box_from_pixels(cls, box: tuple[float, float, float, float], width: int, height: int,
                        label: str | None = None) -> "Region":
        """From a pixel box ``(x1, y1, x2, y2)``; clipped to the image and rounded onto the grid."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        x1, y1, x2, y2 = box
        if x2 < x1 or y2 < y1:
            raise ValueError(f"pixel box {box} has x2 < x1 or y2 < y1")

        def grid(v: float, size: int) -> int:
            return int(round(min(max(v, 0.0), size) * GRID / size))

        return cls("box", (grid(y1, height), grid(x1, width), grid(y2, height), grid(x2, width)), label)

    @classmethod
    def point_from_pixels(cls, point: tuple[float, float], width: int, height: int,
                          label: str | None = None) -> "Region":
        """From a pixel point ``(x, y)``."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        x, y = point
        gy = int(round(min(max(y, 0.0), height) * GRID / height))
        gx = int(round(min(max(x, 0.0), width) * GRID / width))
        return cls("point", (gy, gx), label)


def _region_from_obj(obj: object) -> tuple[Region | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    if ("box_2d" in obj) == ("point" in obj):
        return None, 'needs exactly one of "box_2d" or "point"'
    key, n = ("box_2d", 4) if "box_2d" in obj else ("point", 2)
    coords = obj[key]
    if not isinstance(coords, list) or len(coords) != n:
        return None, f'"{key}" must be a list of {n} numbers'
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords):
        return None, f'"{key}" must hold numbers only'
    if not all(0 <= c <= GRID for c in coords):
        return None, f'"{key}" {coords} is outside the 0-{GRID} grid'
    if key == "box_2d" and (coords[2] < coords[0] or coords[3] < coords[1]):
        return None, f'"box_2d" {coords} has y2 < y1 or x2 < x1 (order is [y1, x1, y2, x2])'
    label = obj.get("label")
    if label is not None and not isinstance(label, str):
        return None, '"label" must be a string'
    return Region("box" if key == "box_2d" else "point", tuple(int(round(c)) for c in coords), label), None


def parse_regions(loc_text: str, base_offset: int = 0) -> tuple[list[Region], list[ScaffoldIssue]]:
    """Every ``{...}`` region in a ``<LOC>`` text; bad JSON or a bad schema is an issue, not a skip."""
    regions: list[Region] = []
    issues: list[ScaffoldIssue] = []
    decoder = json.JSONDecoder()
    pos = 0
    while (start := loc_text.find("{", pos)) != -1:
        try:
            obj, end = decoder.raw_decode(loc_text, start)
        except json.JSONDecodeError as err:
            snippet = loc_text[start:start + 60].split("}")[0] + "}"
            issues.append(ScaffoldIssue("invalid_region", "LOC", base_offset + start,
                                        f"region is not valid JSON ({err.msg}): {snippet!r}"))
            close = loc_text.find("}", start)
            pos = start + 1 if close == -1 else close + 1
            continue
        region, problem = _region_from_obj(obj)
        if region is None:
            issues.append(ScaffoldIssue("invalid_region", "LOC", base_offset + start,
                                        f"{problem}: {loc_text[start:end]!r}"))
        else:
            regions.append(region)
        pos = end
    return regions, issues
