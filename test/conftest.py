"""Test-wide DDS isolation: loopback discovery, a free ROS_DOMAIN_ID for this run, logs in a temp folder.

Set before any test imports rclpy; child processes inherit it.
"""

from drive_mllm_ros.ros_env import isolate_ros

isolate_ros(fresh_domain=True)
