"""`python -m drive_mllm_ros.train` (and under torchrun / accelerate launch)."""

import sys

from . import main

sys.exit(main(sys.argv[1:]))
