"""Location tokens: positions of tags and listed objects as bins, and back to the bins' centres."""

from __future__ import annotations

import pytest

from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.evaluation.match import MATCH_DISTANCE, decimal_points
from drive_mllm_ros.locations import LocationGrid, location_tokens
from drive_mllm_ros.prompt import PromptBuilder, checkpoint_locations, update_checkpoint_settings

GRID = LocationGrid(32, 224, 126)
ANSWER = ("Firstly notice that <c1,CAM_FRONT_LEFT,204.3,89.6>. There is a grey car at (115.5, 78.1). "
          "Trajectory [(6.5, 0.0), (12.9, 0.0)].")


def test_tags_and_listed_points_become_tokens_and_other_numbers_stay():
    tokens = GRID.to_tokens(ANSWER)
    assert "<c1,CAM_FRONT_LEFT,<x29>,<y22>>" in tokens and "at (<x16>, <y19>)" in tokens
    assert "[(6.5, 0.0), (12.9, 0.0)]" in tokens  # trajectory waypoints are metres, not positions


def test_decoding_lands_within_half_a_bin_so_the_match_rule_holds():
    decoded = GRID.from_tokens(GRID.to_tokens(ANSWER))
    assert "<x" not in decoded and "<y" not in decoded
    for (x, y), (x0, y0) in zip(decimal_points(decoded), decimal_points(ANSWER), strict=True):
        assert abs(x - x0) <= 224 / 64 + 0.05 and abs(y - y0) <= 126 / 64 + 0.05
        assert abs(x - x0) + abs(y - y0) < MATCH_DISTANCE


def test_bins_clamp_to_the_view_and_the_vocabulary_has_one_token_per_bin_and_axis():
    assert GRID.to_tokens("<c2,CAM_BACK,-3.0,500.0>") == "<c2,CAM_BACK,<x0>,<y31>>"
    assert location_tokens(4) == ["<x0>", "<x1>", "<x2>", "<x3>", "<y0>", "<y1>", "<y2>", "<y3>"]
    with pytest.raises(ValueError, match="at least 2 bins"):
        LocationGrid(1, 224, 126)


def test_the_builder_writes_tokens_for_training_and_serving_and_reads_them_back(tmp_path):
    builder = PromptBuilder(rig=CameraRig(), layout="per_view", locations=GRID)  # the grid, not the rig, sizes
    question = "Would <c1,CAM_FRONT,100.0,60.0> be in the moving direction of the ego vehicle?"
    user, assistant = builder.messages(question, ANSWER)
    assert "<c1,CAM_FRONT,<x14>,<y15>>" in user["content"]
    assert assistant["content"] == GRID.to_tokens(ANSWER)
    assert builder.from_model_text(assistant["content"]) == GRID.from_tokens(assistant["content"])
    with pytest.raises(ValueError, match="per_view layout"):
        PromptBuilder(layout="stitched", locations=GRID)


def test_a_checkpoint_keeps_its_grid_with_the_pixels_it_spans(tmp_path):
    assert checkpoint_locations(tmp_path) is None
    update_checkpoint_settings(tmp_path, **GRID.settings())
    assert checkpoint_locations(tmp_path) == GRID
    update_checkpoint_settings(tmp_path, location_extent=None)
    with pytest.raises(ValueError, match="location_extent"):
        checkpoint_locations(tmp_path)
