# detection-agent: the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs into .venv first (once; again when the packaging changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARED ?= ../shared
DEMO_OUT := demo-output

.PHONY: install test lint demo bench soak model model-compare clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[cpu,train,eval,dev]'
	touch $(STAMP)

install: $(STAMP)

# tests/integration/test_systemd.py needs systemd-analyze (package systemd) and shellcheck:
# installed here when missing and run as root (CI containers); otherwise those tests skip
# and say why.
test: $(STAMP)
	@for tool in systemd-analyze:systemd shellcheck:shellcheck; do \
		command -v $${tool%%:*} >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq $${tool##*:} >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq $${tool##*:} >/dev/null; }; } || \
		echo "warning: could not install $${tool##*:}: some systemd unit tests will be skipped"; \
	done
	@# The MQTT tests start their own Mosquitto on a free loopback port: the binary must exist.
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && export DEBIAN_FRONTEND=noninteractive && \
		{ apt-get install -y -qq mosquitto >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }; }; } || \
		{ echo "make test needs the mosquitto broker: run 'sudo apt-get install -y mosquitto'" >&2; exit 1; }
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check agent tests
	$(BIN)/vermin -t=3.8- --no-tips --violations --eval-annotations agent

# The whole product on this machine: a sample video -> the agent with the shipped model ->
# MQTT (a private broker when none answers) -> a live subscriber -> summary and mAP.
demo: $(STAMP)
	$(BIN)/python -m agent.demo --out $(DEMO_OUT)

# Every comparison, peers measured in the same run; the Markdown table goes into the README.
bench: $(STAMP)
	$(BIN)/detection-agent bench --all --json bench-results.json --markdown bench-results.md

# Not in CI: the agent for SOAK_S seconds on a looping camera stream that is cut and restored,
# with its broker restarted every few minutes; fails on any lost message or resource growth.
SOAK_S ?= 1800
soak: $(STAMP)
	$(BIN)/python -m agent.bench.soak --duration $(SOAK_S)

# The shipped demo model: synthetic shapes, YOLOv3-tiny at a quarter width (so it trains on
# a CPU), default augmentation recipe (40 epochs at 416), exported at 416. models/README.md
# records what this produced.
DATA_DIR    := runs/data
MODEL_WIDTH := 0.25
TRAIN_ARGS  := --model yolov3-tiny --width $(MODEL_WIDTH)

$(DATA_DIR)/shapes-train/data.yaml: | $(STAMP)
	$(BIN)/detection-agent make-dataset shapes --out $(DATA_DIR)/shapes-train --train 1200 --val 200 \
		--imgsz 416 --seed 0 --overwrite

model: $(DATA_DIR)/shapes-train/data.yaml
	$(BIN)/detection-agent train --data $< $(TRAIN_ARGS) --recipe configs/train/augment-default.yaml \
		--name shapes-augment
	$(BIN)/detection-agent export --weights runs/train/shapes-augment/weights/best.pt --imgsz 416 \
		--data $< --verify-images $(DATA_DIR)/shapes-train/images/val -o models/shapes-yolov3-tiny.onnx

# The same training without augmentation, for the comparison in models/README.md.
model-compare: $(DATA_DIR)/shapes-train/data.yaml
	$(BIN)/detection-agent train --data $< $(TRAIN_ARGS) --recipe configs/train/no-augment.yaml \
		--name shapes-no-augment
	$(BIN)/detection-agent export --weights runs/train/shapes-no-augment/weights/best.pt --imgsz 416 \
		--data $< -o runs/shapes-yolov3-tiny-no-augment.onnx

clean:
	rm -rf $(DEMO_OUT) bench-results.json .pytest_cache .ruff_cache build *.egg-info
