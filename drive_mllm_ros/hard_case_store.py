"""The hard-case folder: kept frames as a DriveLM-format dataset plus a manifest. Pure Python.

    DIR/frames/<frame>/drive_mllm__CAM_FRONT__<stamp_us>.jpg   six images, as received (raw ones JPEG-encoded)
    DIR/frames/<frame>/record.json    stamp, reasons, confidences, the node's QA: the frame's source of truth
    DIR/drivelm/v1_1_train_nus.json   DriveLM v1.1: one scene, a key frame per kept frame, QA = the node's answers,
                                      image_paths relative to this JSON's folder (`../frames/...`, as the world
                                      writes `../nuscenes/...`), so `drive-mllm train` and `label` read it as is
    DIR/manifest.jsonl                one line per kept frame: stamp, reasons, scores, paths

A frame is written into a hidden temporary folder and renamed into place (atomic), so a frame is either whole
or absent; the two indexes are rebuilt from the records and replaced atomically. On start the records are read
back, so restarts continue the same folder; leftover temporary folders (a crash mid-write) are removed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data.drivelm_qa import qa_item
from .drivelm import STAGES

DRIVELM_JSON = Path("drivelm") / "v1_1_train_nus.json"
MANIFEST = "manifest.jsonl"
RECORD = "record.json"
SCENE_TOKEN = "drive_mllm_hard_cases"
TEMP_PREFIX = ".tmp-"


def frame_token(stamp_ns: int) -> str:
    """Frames are named by their anchor stamp in microseconds, as nuScenes names its files."""
    return str(stamp_ns // 1000)


def image_name(camera: str, stamp_ns: int, extension: str) -> str:
    """`drive_mllm__CAM_FRONT__<stamp_us>.jpg`: the nuScenes file pattern `cam_front_stamp` reads."""
    return f"drive_mllm__{camera}__{stamp_ns // 1000}{extension}"


def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f"{TEMP_PREFIX}{path.name}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def record_text(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


def drivelm_frame(record: dict[str, Any]) -> dict[str, Any]:
    """A record -> its DriveLM v1.1 key frame (QA per stage in the order asked, images relative to drivelm/)."""
    qa: dict[str, list[dict]] = {}
    for item in record["qa"]:
        qa.setdefault(item["stage"], []).append(qa_item(item["question"], item["answer"]))
    ordered = {stage: qa[stage] for stage in STAGES if stage in qa}
    images = {camera: f"../{path}" for camera, path in record["image_paths"].items()}
    return {"key_object_infos": {}, "QA": ordered, "image_paths": images}


def manifest_line(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in ("qa", "key_objects")}


class HardCaseStore:
    """Reads, writes and removes kept frames under one folder; indexes rebuilt on request."""

    def __init__(self, root: Path, report: Callable[[str, str], None]) -> None:
        self.root, self.report = root, report
        try:
            (root / "frames").mkdir(parents=True, exist_ok=True)
            (root / DRIVELM_JSON.parent).mkdir(exist_ok=True)
            self.records = self._load()
        except OSError as error:
            raise ValueError(f"hard_cases.dir: cannot use '{root}' ({error.strerror or error})") from None

    def _load(self) -> dict[str, dict[str, Any]]:
        """Records of frames written before (a restart), dropping half-written temporary folders."""
        records = {}
        frames = self.root / "frames"
        for folder in sorted(frames.iterdir()):
            if folder.name.startswith(TEMP_PREFIX):
                self._clean_temporary(folder)
        for folder in sorted(frames.iterdir()):
            try:
                record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
                records[record["frame"]] = record
            except (OSError, ValueError, KeyError, TypeError) as error:  # left in place, never deleted
                self.report("hard case record unreadable", f"hard cases: skipping '{folder}': {error}")
        return records

    def _clean_temporary(self, folder: Path) -> None:
        """A half-written frame goes; an older copy set aside while replacing goes back if its frame is gone."""
        frame = folder.name.removeprefix(f"{TEMP_PREFIX}old-")
        if frame != folder.name and not (folder.parent / frame).exists():
            os.replace(folder, folder.parent / frame)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    def kept(self) -> list[dict[str, Any]]:
        return list(self.records.values())

    def record(
        self,
        scene: dict[str, Any],
        stamp_ns: int,
        verdict: dict[str, Any],
        stamps: dict[str, int],
        files: dict[str, tuple[bytes, str]],
    ) -> dict[str, Any]:
        """The frame's record (what record.json and the manifest hold); size counts images and record."""
        token = frame_token(stamp_ns)
        names = {camera: image_name(camera, stamps[camera], extension) for camera, (_, extension) in files.items()}
        record = {
            "frame": token,
            "stamp_ns": stamp_ns,
            "stamp": scene["stamp"],
            "frame_id": scene["frame_id"],
            "model": scene["model"],
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **verdict,  # reasons, details, confidence (the least confident answer's), badness
            "answer_scores": [
                {"stage": item["stage"], "confidence": item.get("confidence"), "min_prob": item.get("min_prob")}
                for item in scene["qa"]
            ],
            "cameras": scene["cameras"],
            "image_paths": {camera: f"frames/{token}/{name}" for camera, name in names.items()},
            "record": f"frames/{token}/{RECORD}",
            "qa": scene["qa"],
            "key_objects": scene["key_objects"],
            "size_bytes": 0,
        }
        record_bytes = len(record_text(record).encode()) + 10  # + the digits of size_bytes itself
        record["size_bytes"] = sum(len(data) for data, _ in files.values()) + record_bytes
        return record

    def write(self, record: dict[str, Any], files: dict[str, tuple[bytes, str]]) -> None:
        """Images and record into a temporary folder, renamed into place (replacing an older copy of the frame)."""
        final = self.root / "frames" / record["frame"]
        temporary = final.with_name(f"{TEMP_PREFIX}{record['frame']}")
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        for camera, (data, _) in files.items():
            (temporary / Path(record["image_paths"][camera]).name).write_bytes(data)
        (temporary / RECORD).write_text(record_text(record), encoding="utf-8")
        if final.exists():
            old = final.with_name(f"{TEMP_PREFIX}old-{record['frame']}")
            os.replace(final, old)
            os.replace(temporary, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, final)
        self.records[record["frame"]] = record

    def remove(self, frames: list[str]) -> None:
        for frame in frames:
            self.records.pop(frame, None)
            shutil.rmtree(self.root / "frames" / frame, ignore_errors=True)

    def write_indexes(self) -> None:
        """The DriveLM JSON and the manifest, from the records, in stamp order."""
        records = sorted(self.records.values(), key=lambda r: r["stamp_ns"])
        scene = {
            "scene_description": "Frames the drive_mllm node kept as hard cases; QA holds the node's own answers.",
            "key_frames": {r["frame"]: drivelm_frame(r) for r in records},
        }
        write_atomic(self.root / DRIVELM_JSON, json.dumps({SCENE_TOKEN: scene}, indent=1, ensure_ascii=False))
        lines = "".join(json.dumps(manifest_line(r), ensure_ascii=False) + "\n" for r in records)
        write_atomic(self.root / MANIFEST, lines)
