"""Camera rig: which cameras, their order, topics and the stitched-mosaic geometry.

Pure Python (no rclpy): shared by the node, the data tools, training and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# nuScenes cameras in mosaic order: row 0 front-left/front/front-right, row 1 back-left/back/back-right.
NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)
NUSCENES_IMAGE_SIZE = (1600, 900)  # width, height of every nuScenes camera
MOSAIC_VIEW_SIZE = (896, 448)  # width, height of one view inside the stitched mosaic
MOSAIC_COORD_RANGE = 1000.0  # stitched coordinates are normalised to 0..1000 over the mosaic
DEFAULT_TOPIC_PATTERN = "/{camera}/image_rect_compressed"


@dataclass(frozen=True)
class CameraRig:
    """An ordered camera set: the order is the mosaic's row-major order and the per-view text order."""

    names: tuple[str, ...] = NUSCENES_CAMERAS
    image_size: tuple[int, int] = NUSCENES_IMAGE_SIZE
    anchor: str = "CAM_FRONT"
    columns: int = 3
    topics: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("cameras: expected at least one camera name, got an empty list")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"cameras: names must be unique, got {list(self.names)}")
        if self.anchor not in self.names:
            raise ValueError(f"anchor_camera: '{self.anchor}' is not one of the cameras {list(self.names)}")
        if self.columns < 1:
            raise ValueError(f"mosaic_columns: expected >= 1, got {self.columns}")
        if min(self.image_size) < 1:
            raise ValueError(f"image_size: expected positive width and height, got {self.image_size}")
        if not self.topics:
            object.__setattr__(self, "topics", tuple(DEFAULT_TOPIC_PATTERN.format(camera=n) for n in self.names))
        if len(self.topics) != len(self.names):
            raise ValueError(f"camera_topics: expected {len(self.names)} topics (one per camera), got {len(self.topics)}")

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], topic_pattern: str = DEFAULT_TOPIC_PATTERN,
                   **kwargs) -> CameraRig:
        """A rig whose topics follow a pattern such as '/{camera}/image_rect_compressed'."""
        if "{camera}" not in topic_pattern:
            raise ValueError(f"topic_pattern: expected a '{{camera}}' placeholder, got '{topic_pattern}'")
        return cls(names=tuple(names), topics=tuple(topic_pattern.format(camera=n) for n in names), **kwargs)

    @property
    def rows(self) -> int:
        return -(-len(self.names) // self.columns)

    @property
    def mosaic_size(self) -> tuple[int, int]:
        """(width, height) of the stitched mosaic in pixels."""
        return self.columns * MOSAIC_VIEW_SIZE[0], self.rows * MOSAIC_VIEW_SIZE[1]

    def index(self, camera: str) -> int:
        try:
            return self.names.index(camera)
        except ValueError:
            raise ValueError(f"camera '{camera}' is not in the rig {list(self.names)}") from None

    def grid_cell(self, camera: str) -> tuple[int, int]:
        """(row, column) of a camera's view in the mosaic."""
        return divmod(self.index(camera), self.columns)

    def to_mosaic(self, camera: str, x: float, y: float) -> tuple[float, float]:
        """Camera pixel centre -> mosaic coordinates normalised to 0..1000 (METHOD.md formula)."""
        row, col = self.grid_cell(camera)
        (vw, vh), (mw, mh) = MOSAIC_VIEW_SIZE, self.mosaic_size
        width, height = self.image_size
        xn = (col * vw + x / width * vw) / mw * MOSAIC_COORD_RANGE
        yn = (row * vh + y / height * vh) / mh * MOSAIC_COORD_RANGE
        return round(xn, 1), round(yn, 1)

    def from_mosaic(self, xn: float, yn: float, camera: str | None = None) -> tuple[str, float, float]:
        """Mosaic 0..1000 coordinates -> (camera, x, y) in that camera's pixels, clamped, one decimal.

        The camera is the one whose cell holds the point unless given (a tag names its camera).
        """
        (vw, vh), (mw, mh) = MOSAIC_VIEW_SIZE, self.mosaic_size
        px, py = xn / MOSAIC_COORD_RANGE * mw, yn / MOSAIC_COORD_RANGE * mh
        if camera is None:
            col = min(max(int(px // vw), 0), self.columns - 1)
            row = min(max(int(py // vh), 0), self.rows - 1)
            camera = self.names[min(row * self.columns + col, len(self.names) - 1)]
        row, col = self.grid_cell(camera)
        width, height = self.image_size
        x = min(max((px - col * vw) / vw * width, 0.0), float(width))
        y = min(max((py - row * vh) / vh * height, 0.0), float(height))
        return camera, round(x, 1), round(y, 1)
