# Fresh machine: `make demo` (main job on the embedded default) and `make test` (the test suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench student

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
