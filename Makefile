# defect_det — the two commands a new user needs: `make demo` and `make test`.
# Everything runs inside .venv (created by `make install`, see tools/setup_env.sh).
# Override e.g.:  make demo PYTHON=/usr/bin/python3.10 DETECTRON2_DATASETS=/data DEMO_ITERS=6000

PY       := .venv/bin/python
export DETECTRON2_DATASETS ?= datasets
SYN      := $(DETECTRON2_DATASETS)/synthetic_fabric
SEED     ?= 0
CFG      ?= configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml
DEMO_OUT ?= output/demo
DEMO_ITERS ?= 1500
PYTEST_ARGS ?=

.PHONY: install data demo test clean-data help

help:
	@echo "make install  - create .venv with the verified stack (idempotent)"
	@echo "make demo     - install, generate + convert synthetic fabric data, train, evaluate, visualise"
	@echo "make test     - install, run the test suite"
	@echo "make data     - only generate + convert the synthetic fabric dataset"

install:
	@bash tools/setup_env.sh

# The synthetic fabric set in the Tianchi round-2 layout, exported to COCO by the same converter as
# the real data: 'seen' textures split into train/test, held-out texture families -> 'unseen'.
$(SYN)/annotations/fabric_unseen.json:
	$(PY) tools/make_synthetic_fabric.py --out $(SYN) --seed $(SEED) --preview $(SYN)/preview.png
	$(PY) tools/convert_tianchi.py fabric --root $(SYN)/seen --image-root $(SYN) \
	    --out-dir $(SYN)/annotations --prefix fabric --test-size 60 --seed $(SEED)
	$(PY) tools/convert_tianchi.py fabric --root $(SYN)/unseen_texture --image-root $(SYN) \
	    --out-dir $(SYN)/annotations --prefix fabric_unseen --no-split

data: install $(SYN)/annotations/fabric_unseen.json

demo: data
	$(PY) tools/train_net.py --config-file $(CFG) --vis \
	    OUTPUT_DIR $(DEMO_OUT) SOLVER.MAX_ITER $(DEMO_ITERS) \
	    SOLVER.STEPS "($$(( $(DEMO_ITERS) * 4 / 5 )),$$(( $(DEMO_ITERS) * 14 / 15 )))"

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean-data:
	rm -rf $(SYN)
