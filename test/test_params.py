"""Node parameter schema: YAML defaults equal the code's, validation names the parameter."""

import pytest
import yaml

from drive_mllm_ros.params import NodeParams
from drive_mllm_ros.paths import default_params_file


def test_yaml_documents_exactly_the_code_defaults():
    yaml_values = yaml.safe_load(default_params_file().read_text())["/**"]["ros__parameters"]
    flat = {}
    for key, value in yaml_values.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    assert flat == NodeParams().ros_defaults()


def test_round_trip_through_ros_values_strips_unset_lists():
    params = NodeParams.from_ros(NodeParams().ros_defaults())
    assert params.questions["trajectory"] == [] and params.camera_topics == []
    assert params.rig().topics[1] == "/CAM_FRONT/image_rect_compressed"
    assert len(params.stage_questions().fixed()) == 3  # perception, planning, behavior; prediction is per object


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("layout", "grid"),
        ("image_transport", "theora"),
        ("image_qos_reliability", "sometimes"),
        ("missing_camera_policy", "wait"),
        ("sync_tolerance", 0.0),
        ("anchor_camera", "CAM_ROOF"),
        ("device", "tpu"),
        ("annotated_jpeg_quality", 0),
        ("camera_topics", ["/a", "/b"]),
        ("max_new_tokens.planning", 0),
        ("questions.gossip", ["Any news?"]),
        ("hard_cases.min_confidence", 2.0),
        ("hard_cases.max_mb", 0),
    ],
)
def test_invalid_values_name_the_parameter(name, value):
    flat = NodeParams().ros_defaults()
    flat[name] = value
    with pytest.raises(
        ValueError, match=name.split(".")[0] if name.startswith("max_new") else name.replace(".", r"\.")
    ):
        NodeParams.from_ros(flat)
