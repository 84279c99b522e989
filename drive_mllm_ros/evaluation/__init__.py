"""DriveLM challenge evaluation, re-implemented to give the official scorer's numbers.

prepare: DriveLM v1.1 JSON -> the challenge test format (tagged QA); score: predictions -> accuracy,
language, match, judge and the final score; report: JSON, Markdown, PNG. Pure Python except
from_bag (rosbags). See /work/shared/METHOD.md and docs in cli.py.
"""
