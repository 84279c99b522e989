"""Camera rig geometry and the shared prompt builder."""

import pytest

from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.prompt import PromptBuilder


def test_mosaic_formula_of_method_md():
    rig = CameraRig()
    assert rig.mosaic_size == (2688, 896)
    # CAM_BACK is row 1, column 1: cx_n = (896 + 1088.3/1600*896)/2688*1000, cy_n = (448 + 497.5/900*448)/896*1000
    assert rig.to_mosaic("CAM_BACK", 1088.3, 497.5) == (
        round((896 + 1088.3 / 1600 * 896) / 2688 * 1000, 1),
        round((448 + 497.5 / 900 * 448) / 896 * 1000, 1),
    )


@pytest.mark.parametrize("camera", CameraRig().names)
def test_mosaic_round_trip_within_a_pixel(camera):
    rig = CameraRig()
    for x, y in [(0.0, 0.0), (812.4, 466.0), (1599.0, 899.0)]:
        back_camera, bx, by = rig.from_mosaic(*rig.to_mosaic(camera, x, y), camera=camera)
        assert back_camera == camera and abs(bx - x) < 1.0 and abs(by - y) < 1.0
        inferred = rig.from_mosaic(*rig.to_mosaic(camera, min(x + 5, 1595), min(y + 5, 895)))[0]
        assert inferred == camera


def test_other_rigs():
    rig = CameraRig.from_names(["CAM_A", "CAM_B", "CAM_C", "CAM_D"], "/{camera}/image", anchor="CAM_A", columns=2)
    assert rig.mosaic_size == (1792, 896) and rig.topics[3] == "/CAM_D/image" and rig.grid_cell("CAM_D") == (1, 1)
    eight = CameraRig.from_names([f"C{i}" for i in range(8)], anchor="C0", columns=4)
    assert eight.rows == 2 and eight.mosaic_size == (3584, 896)
    with pytest.raises(ValueError, match="anchor"):
        CameraRig.from_names(["A", "B"], anchor="C")
    with pytest.raises(ValueError, match="camera_topics"):
        CameraRig(names=("A",), anchor="A", topics=("/a", "/b"))


def test_layouts_announce_images_and_convert_tags():
    question = "Would <c1,CAM_BACK,1088.3,497.5> be in the moving direction of the ego vehicle?"
    stitched = PromptBuilder(layout="stitched").user_text(question)
    assert stitched.startswith("<image>\n") and stitched.count("<image>") == 1 and "1088.3" not in stitched
    per_view = PromptBuilder(layout="per_view").user_text(question)
    assert per_view.splitlines()[:2] == ["CAM_FRONT_LEFT: <image>", "CAM_FRONT: <image>"]
    assert per_view.count("<image>") == 6 and "<c1,CAM_BACK,1088.3,497.5>" in per_view
    builder = PromptBuilder(layout="stitched")
    assert builder.from_model_text(builder.to_model_text("<c2,CAM_FRONT,800.0,450.0>")) == "<c2,CAM_FRONT,800.0,450.0>"
    with pytest.raises(ValueError, match="layout"):
        PromptBuilder(layout="grid")


def test_messages_for_training_carry_the_answer_in_model_coordinates():
    builder = PromptBuilder(layout="stitched", system_prompt="You are a driver.")
    messages = builder.messages("What is it?", "It is <c1,CAM_FRONT,800.0,450.0>.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2]["content"] == "It is " + builder.to_model_text("<c1,CAM_FRONT,800.0,450.0>") + "."


def test_checkpoint_layout_file_drives_the_auto_layout(tmp_path):
    from drive_mllm_ros.params import NodeParams
    from drive_mllm_ros.prompt import LAYOUT_FILE, checkpoint_layout, write_checkpoint_layout

    assert checkpoint_layout(tmp_path) is None
    assert NodeParams().prompt_builder(str(tmp_path)).layout == "stitched"
    write_checkpoint_layout(tmp_path, "per_view")
    assert checkpoint_layout(tmp_path) == "per_view"
    assert NodeParams().prompt_builder(str(tmp_path)).layout == "per_view"
    assert NodeParams(layout="stitched").prompt_builder(str(tmp_path)).layout == "stitched"
    (tmp_path / LAYOUT_FILE).write_text('{"layout": "grid"}')
    with pytest.raises(ValueError, match="layout"):
        checkpoint_layout(tmp_path)
