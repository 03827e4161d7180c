# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= outputs

.PHONY: demo test lint install clean reference-model device-wheels

# The venv is rebuilt only when pyproject.toml changes (the stamp records the install).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crosswalk demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests

clean:
	rm -rf $(OUT) .pytest_cache

# Reproduce the reference model in models/reference-nano (about 4 hours on 2 idle CPU cores): 1000 steps
# from scratch, 1000 more from those weights at half the rate (configs/reference-nano-finetune.toml), then
# three times 1000 more at that rate, each on 4000 new frames (configs/reference-nano-stage3.toml to stage5).
REF_DATA ?= data/reference
reference-model: $(STAMP)
	test -f $(REF_DATA)/train/manifest.json || $(BIN)/crosswalk data synth --out $(REF_DATA)/train --frames 4000 --seed 1
	test -f $(REF_DATA)/val/manifest.json || $(BIN)/crosswalk data synth --out $(REF_DATA)/val --frames 500 --seed 9001
	$(BIN)/crosswalk train --data $(REF_DATA)/train --val $(REF_DATA)/val --out runs/reference-nano --config configs/reference-nano.toml
	$(BIN)/crosswalk train --data $(REF_DATA)/train --val $(REF_DATA)/val --out runs/reference-nano-ft --config configs/reference-nano-finetune.toml init_from=runs/reference-nano
	test -f $(REF_DATA)/train2/manifest.json || $(BIN)/crosswalk data synth --out $(REF_DATA)/train2 --frames 4000 --seed 2
	$(BIN)/crosswalk train --data $(REF_DATA)/train2 --val $(REF_DATA)/val --out runs/reference-nano-s3 --config configs/reference-nano-stage3.toml init_from=runs/reference-nano-ft
	test -f $(REF_DATA)/train3/manifest.json || $(BIN)/crosswalk data synth --out $(REF_DATA)/train3 --frames 4000 --seed 3
	$(BIN)/crosswalk train --data $(REF_DATA)/train3 --val $(REF_DATA)/val --out runs/reference-nano-s4 --config configs/reference-nano-stage4.toml init_from=runs/reference-nano-s3
	test -f $(REF_DATA)/train4/manifest.json || $(BIN)/crosswalk data synth --out $(REF_DATA)/train4 --frames 4000 --seed 4
	$(BIN)/crosswalk train --data $(REF_DATA)/train4 --val $(REF_DATA)/val --out runs/reference-nano-s5 --config configs/reference-nano-stage5.toml init_from=runs/reference-nano-s4
	mkdir -p models/reference-nano
	cp runs/reference-nano-s5/weights/model.safetensors runs/reference-nano-s5/weights/model.json configs/reference-nano*.toml models/reference-nano/
	$(BIN)/crosswalk eval models/reference-nano --data $(REF_DATA)/val --json models/reference-nano/eval.json --plots models/reference-nano/plots
	rm -rf runs/reference-nano-package
	$(BIN)/crosswalk export models/reference-nano --out runs/reference-nano-package/reference-nano/1 --name reference-nano
	cp runs/reference-nano-package/reference-nano/1/model.onnx runs/reference-nano-package/reference-nano/1/config.json models/reference-nano/

# Wheels a lent GPU machine lacks for `crosswalk device-check` (its Python is 3.12; DEVELOPERS.md, "On a lent
# GPU machine"): the device run carries .whl and installs them to a scratch folder there.
device-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 -d .whl simplejpeg==1.9.0 faster-coco-eval==1.8.0
