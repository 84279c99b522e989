# Fresh machine: `make demo` (main job on the embedded default) and `make test` (the test suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench student field-loop

venv: $(STAMP)

$(STAMP): requirements.txt requirements-core.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	$(BIN)/drive-mllm demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q test

bench: venv
	$(BIN)/drive-mllm bench preprocess

# The pocket student of issue 6 from scratch (world, teacher, distillation, held-out evaluation; see
# drive_mllm_ros/student_recipe.py); installed in models/student only when it clearly reads the cameras.
student: venv
	$(BIN)/python -m drive_mllm_ros.student_recipe --out runs/student --install models/student

# Issue 9's field loop on synthetic data (drive_mllm_ros/field_loop.py): night bags through the node, hard cases kept,
# labelled, the student adapted with and without replay, both gated; report in out/field_loop/field_loop.md.
# The student in service is models/student; STUDENT=path picks another checkpoint.
field-loop: venv
	rm -rf out/field_loop
	$(BIN)/drive-mllm field-loop --out out/field_loop $(if $(STUDENT),--student $(STUDENT))
