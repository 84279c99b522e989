"""Camera-set synchronization: anchoring, tolerance, missing-camera policies, time jumps, bounded memory."""

import pytest

from drive_mllm_ros.sync import CameraSynchronizer

CAMS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT")
MS = 1_000_000


def feed_sweep(sync, t_ms, offsets_ms=None, skip=()):
    """One sweep: the front camera at t, the others staggered after it; returns emitted sets."""
    offsets_ms = offsets_ms or {"CAM_FRONT": 0, "CAM_FRONT_LEFT": 20, "CAM_FRONT_RIGHT": 40}
    out = []
    for cam, off in sorted(offsets_ms.items(), key=lambda kv: kv[1]):
        if cam not in skip:
            result = sync.add(cam, (t_ms + off) * MS, f"{cam}@{t_ms}")
            if result:
                out.append(result)
    return out


def test_staggered_cameras_form_one_complete_set_per_sweep():
    sync = CameraSynchronizer(CAMS, "CAM_FRONT", tolerance_s=0.05)
    sets = [s for t in range(0, 1000, 83) for s in feed_sweep(sync, t)]
    assert len(sets) == len(range(0, 1000, 83))
    assert all(not s.partial for s in sets)
    assert sets[3].messages == {c: f"{c}@{3 * 83}" for c in CAMS}
    assert sets[3].stamp_ns == 3 * 83 * MS


def test_out_of_order_arrival_still_matches():
    sync = CameraSynchronizer(CAMS, "CAM_FRONT", tolerance_s=0.05)
    assert sync.add("CAM_FRONT_RIGHT", 40 * MS, "r") is None
    assert sync.add("CAM_FRONT_LEFT", 20 * MS, "l") is None
    result = sync.add("CAM_FRONT", 0, "f")
    assert result is not None and result.messages == {"CAM_FRONT": "f", "CAM_FRONT_LEFT": "l", "CAM_FRONT_RIGHT": "r"}


def test_stamps_outside_tolerance_are_not_matched():
    sync = CameraSynchronizer(CAMS, "CAM_FRONT", tolerance_s=0.03, missing_policy="drop")
    sets = []
    for t in range(0, 2000, 83):
        sets += feed_sweep(sync, t, {"CAM_FRONT": 0, "CAM_FRONT_LEFT": 10, "CAM_FRONT_RIGHT": 40})
    assert sets == []
    assert sync.stats.dropped > 0 and sync.stats.missing_by_camera["CAM_FRONT_RIGHT"] == sync.stats.dropped


@pytest.mark.parametrize("policy", ["drop", "blank"])
def test_camera_that_stops(policy):
    sync = CameraSynchronizer(CAMS, "CAM_FRONT", tolerance_s=0.05, max_wait_s=0.2, missing_policy=policy)
    complete = [s for t in range(0, 830, 83) for s in feed_sweep(sync, t)]
    after = [s for t in range(830, 2500, 83) for s in feed_sweep(sync, t, skip=("CAM_FRONT_LEFT",))]
    assert len(complete) == 10 and not any(s.partial for s in complete)
    if policy == "drop":
        assert after == [] and sync.stats.dropped >= 15
    else:
        assert len(after) >= 15 and all(s.missing == ("CAM_FRONT_LEFT",) for s in after)
        assert "CAM_FRONT_LEFT" not in after[-1].messages
        stamps = [s.stamp_ns for s in complete + after]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_looping_bag_restarts_with_older_stamps():
    sync = CameraSynchronizer(CAMS, "CAM_FRONT", tolerance_s=0.05)
    first = [s for t in range(0, 2000, 83) for s in feed_sweep(sync, t)]
    second = [s for t in range(0, 1000, 83) for s in feed_sweep(sync, t)]
    assert len(second) == len(range(0, 1000, 83)), "sets after the loop must flow again"
    assert sync.stats.time_resets >= 1 and len(first) == len(range(0, 2000, 83))


def test_memory_is_bounded_at_any_rate():
    sync = CameraSynchronizer(CAMS, "CAM_FRONT", history=8)
    for t in range(0, 100_000, 5):  # 200 Hz anchors, other cameras silent
        sync.add("CAM_FRONT", t * MS, None)
    assert len(sync.pending) <= 8 and all(len(h) <= 8 for h in sync.history.values())


def test_invalid_configuration_names_the_parameter():
    with pytest.raises(ValueError, match="missing_camera_policy"):
        CameraSynchronizer(CAMS, "CAM_FRONT", missing_policy="wait")
    with pytest.raises(ValueError, match="anchor_camera"):
        CameraSynchronizer(CAMS, "CAM_BACK")
    with pytest.raises(ValueError, match="not synchronized"):
        CameraSynchronizer(CAMS, "CAM_FRONT").add("CAM_BACK", 0, None)


def test_latest_only_keeps_the_newest_and_queues_pinned_key_frames():
    from drive_mllm_ros.sync import LatestOnly

    box = LatestOnly(pinned_limit=2)
    box.put("a")
    box.put("key1", pinned=True)
    box.put("b")
    box.put("key2", pinned=True)
    box.put("key3", pinned=True)  # over the limit: dropped and counted
    assert [box.take(0), box.take(0), box.take(0), box.take(0)] == ["key1", "key2", "b", None]
    assert box.superseded == 1 and box.pinned_dropped == 1
