# detection-agent: the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs into .venv first (once; again when the packaging changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= ../shared
DEMO_OUT := demo-output

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[cpu,train,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check agent tests
	$(BIN)/vermin -t=3.8- --no-tips --violations --eval-annotations agent

# Until the daemon lands, the demo is the end-to-end slice that exists: the COCO-trained
# yolov3-tiny over darknet's sample photos, detections printed, annotated copies saved.
demo: $(STAMP)
	$(BIN)/detection-agent detect --model $(SHARED)/models/yolov3-tiny-coco/yolov3-tiny.cfg \
		$(SHARED)/data/darknet-samples --save $(DEMO_OUT)/detect --json $(DEMO_OUT)/detect.json
	@echo "annotated images in $(DEMO_OUT)/detect/, all detections in $(DEMO_OUT)/detect.json"

bench: $(STAMP)
	$(BIN)/detection-agent bench --postprocess --json bench-results.json

clean:
	rm -rf $(DEMO_OUT) bench-results.json .pytest_cache .ruff_cache build *.egg-info
