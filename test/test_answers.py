"""Answer parsing: tags, behaviour, waypoints, multiple choice; malformed text never raises."""

from drive_mllm_ros.answers import parse_behavior, parse_tags, parse_waypoints, resolve_choice, split_choices
from drive_mllm_ros.cameras import NUSCENES_CAMERAS
from drive_mllm_ros.drivelm import MOVING_STATUS_OPTIONS, Q_MOVING_STATUS, behavior_sentence, format_options


def test_tags_in_order_unique_and_malformed_counted():
    text = (
        "There is a car <c1,CAM_FRONT,812.4,466.0> and a truck <c2, CAM_BACK , 100, 200.5>; again <c1,CAM_FRONT,812.4,466.0>,"
        " broken <c3,CAM_FRONT,abc,1.0> and <c4,CAM_NOWHERE,1.0,2.0>."
    )
    tags, unparsed = parse_tags(text, NUSCENES_CAMERAS)
    assert [(t.object_id, t.camera, t.x, t.y) for t in tags] == [
        ("c1", "CAM_FRONT", 812.4, 466.0),
        ("c2", "CAM_BACK", 100.0, 200.5),
    ]
    assert unparsed == 2
    assert str(tags[0]) == "<c1,CAM_FRONT,812.4,466.0>"


def test_garbage_never_raises():
    for text in ["", "<<<>>>", "<c1,", "(((", "\x00\xff", "<c1,CAM_FRONT,1.0>" * 50]:
        parse_tags(text)
        parse_behavior(text)
        parse_waypoints(text)
        resolve_choice(text, text)


def test_behavior_classes_round_trip():
    sentence = behavior_sentence("slightly steering to the left", "driving with normal speed")
    assert parse_behavior(sentence) == ("slightly steering to the left", "driving with normal speed", 0)
    assert parse_behavior("The ego vehicle is steering to the right. It is fast?") == ("steering to the right", None, 1)


def test_waypoints():
    points, unparsed = parse_waypoints("[(2.1, 0.0), (4.3, -0.2), (x, 1), (6.0,0.5)]")
    assert points == [(2.1, 0.0), (4.3, -0.2), (6.0, 0.5)] and unparsed == 1


def test_multiple_choice_letter_resolves_to_option_text():
    question = Q_MOVING_STATUS.format(object="<c1,CAM_FRONT,1.0,2.0>", options=format_options(MOVING_STATUS_OPTIONS))
    assert resolve_choice(question, "B.") == "Turn left."
    assert resolve_choice(question, "D") == "Stopped."
    assert resolve_choice(question, "The car goes ahead.") == "The car goes ahead."


def test_split_choices_gives_the_stem_and_options_of_multiple_choice_only():
    question = ("Predict the behavior of the ego vehicle. Please select the correct answer from the following options: "
                "A. The ego vehicle is going straight. The ego vehicle is driving fast. B. The ego vehicle is "
                "steering to the left. The ego vehicle is driving slowly.")
    assert split_choices(question) == ("Predict the behavior of the ego vehicle.", {
        "A": "The ego vehicle is going straight. The ego vehicle is driving fast.",
        "B": "The ego vehicle is steering to the left. The ego vehicle is driving slowly."})
    assert split_choices("Would <c1,CAM_FRONT,1.0,2.0> be in the moving direction of the ego vehicle?") is None
    assert split_choices("Pick one. Please select the correct answer from the following options: A. Yes.") is None
