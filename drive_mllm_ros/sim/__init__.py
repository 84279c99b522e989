"""Closed loop: the synthetic world as a simulator, reference planners, scoring and the runner.

``simulator``, ``planner`` and ``scoring`` are plain modules (no rclpy); ``sim_node`` and
``planner_node`` are the thin ROS shells; ``closed_loop`` starts the processes and writes the report.
"""
