# One-command setup: `make demo` and `make test` create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Override with an empty value when a CUDA torch is already installed in the venv.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Public data and ROS sources beside the clone (tests skip what needs them when absent).
SHARED ?= $(if $(DIG2DIG_SHARED),$(DIG2DIG_SHARED),../shared)

.PHONY: setup test demo lint bench clean

$(STAMP): requirements.txt requirements-dev.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_SPEC) -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	touch $(STAMP)

# With ../shared/ros2_msgs: the ROS build wheels (requirements-dev.txt) get this Python's include folders in their
# CMake files, so the tests can colcon-build vision_msgs (idempotent; see ../shared/ros2_msgs/README.md).
setup: $(STAMP)
	@if [ -d "$(SHARED)/ros2_msgs" ]; then $(PY) scripts/fix_ros_cmake.py; fi

test: setup
	$(PY) -m pytest -q test

lint: setup
	$(VENV)/bin/ruff check .

# LLVIP=/path/to/folder (with ir/ and vis/) replays those pairs instead of the shipped synthetic sample.
demo: setup
	$(VENV)/bin/dig2dig-ros demo --out demo_output $(if $(LLVIP),--llvip $(LLVIP))

bench: setup
	$(PY) benchmarks/sampler.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output
