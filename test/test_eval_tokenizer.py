"""The Python PTB-rule tokenizer on tags, punctuation, case, clitics and number shapes."""

import pytest

from drive_mllm_ros.evaluation.tokenizer import ptb_tokenize


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("<c1,CAM_FRONT,812.4,466.0>", "c1 cam_front ,812.4,466.0"),
        ("The IDs are <c1,CAM_FRONT,812.4,466.0>, <c2,CAM_BACK,30.5,500.2>.",
         "the ids are c1 cam_front ,812.4,466.0 c2 cam_back ,30.5,500.2"),
        ("Going ahead.", "going ahead"),
        ("Yes.", "yes"),
        ("STOP!  Wait?  Go;now: ok...", "stop wait go now ok"),
        ("A white sedan (parked) to the front-left -- a truck - maybe", "a white sedan parked to the front-left a truck maybe"),
        ("The car's door, don't stop; it's fine", "the car 's door do n't stop it 's fine"),
        ("3.5 m, 1,000 cars at 12:30 and 7 bikes; 42.", "3.5 m 1,000 cars at 12:30 and 7 bikes 42"),
        ('He said "slow" and `then` \'go\'', "he said slow and then go"),
        ("e.g. the U.S. car", "e.g. the u.s. car"),
        ("50% [x]", "50 % -lsb- x -rsb-"),
        ("line one\nline two", "line one line two"),
        ("", ""),
    ],
)
def test_tokens_follow_ptb_rules_and_coco_punctuation(text: str, tokens: str) -> None:
    assert ptb_tokenize(text) == tokens
