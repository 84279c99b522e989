"""drive_mllm_ros: six car cameras in, driving language and planner-ready messages out."""

__version__ = "0.1.0"
