# Fresh-machine entry points (README.md). Each target installs missing dependencies first.
BUILD_DIR ?= build
JOBS ?= 2
MPIRUN ?= mpirun --oversubscribe $(if $(filter 0,$(shell id -u)),--allow-run-as-root,)
SOURCES = $(shell git ls-files '*.cpp' '*.h' 2>/dev/null)

.PHONY: deps configure build test quickstart scale-test soak bench format format-check docs clean

deps:
	@bash scripts/install-deps.sh

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release; \
	fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Every test (unit, mpi, e2e; gpu tests report "skipped" without a device) and the format check.
test: build format-check
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 600

# The main job on the embedded defaults: a tiny Llama and a learnable instruction task are
# generated, and 2 ranks fine-tune it with QLoRA (NF4 base, LoRA adapters), sample packing and
# gradient accumulation, sharded FSDP-style (docs/training.md); the held-out loss falls, the
# held-out token accuracy rises, and the PEFT adapter is written to outputs/quickstart/run/final.
quickstart: build
	rm -rf outputs/quickstart
	$(BUILD_DIR)/bin/ptrain init-model --preset tiny --out outputs/quickstart/tiny-llama
	python3 examples/make_tiny_data.py outputs/quickstart/data
	$(MPIRUN) -np 2 $(BUILD_DIR)/bin/ptrain train --config examples/quickstart.yaml
	@python3 examples/quickstart_summary.py outputs/quickstart/run

# Not in CI: the tiny QLoRA job at 64 ranks on this machine (docs/training.md, "Many ranks").
scale-test: build
	rm -rf outputs/scale-test
	$(BUILD_DIR)/bin/ptrain init-model --preset tiny --out outputs/scale-test/tiny-llama
	python3 examples/make_tiny_data.py outputs/scale-test/data --rows 600
	$(MPIRUN) -np 64 $(BUILD_DIR)/bin/ptrain --config examples/scale-test.yaml
	@python3 examples/quickstart_summary.py outputs/scale-test/run

# ptrain-launch against a SIGKILLed rank at a random step, 2- and 3-rank jobs, ten seeds (CI runs
# two): each restarted job must end with the uninterrupted run's adapter, byte for byte.
soak: build
	PTRAIN_LAUNCH_SEEDS="1 2 3 4 5 6 7 8 9 10" tests/e2e/launch_test.sh $(BUILD_DIR)/bin/ptrain \
	  mpirun . kill

# Full benchmark runs; results (one JSON object per line) go to bench/results/.
bench: build
	mkdir -p bench/results
	$(MPIRUN) -np 2 $(BUILD_DIR)/bin/ptrain-bench comm | tee bench/results/comm-np2.jsonl
	$(MPIRUN) -np 4 $(BUILD_DIR)/bin/ptrain-bench comm | tee bench/results/comm-np4.jsonl
	$(BUILD_DIR)/bin/ptrain-bench nf4 | tee bench/results/nf4.jsonl
	# Checkpoints of the 1b full training state (~13 GB on disk under $$TMPDIR, ~16 GB of memory),
	# and of 160m, whose staged copy fits in memory for the async save.
	rm -f bench/results/ckpt.jsonl
	$(foreach p,1b 160m,$(foreach np,1 2,$(MPIRUN) --bind-to none -np $(np) $(BUILD_DIR)/bin/ptrain-bench ckpt \
	  --preset $(p) | tee -a bench/results/ckpt.jsonl;))
	# The real training job under mpirun at 1, 2 and 4 ranks (started without mpirun itself).
	$(BUILD_DIR)/bin/ptrain-bench train | tee bench/results/train.jsonl
	# ptrain-coordinator pinned to core 0 under 1k, 4k and 16k simulated ranks at 1 Hz, and 16k at
	# 0.25 Hz (the call rate of 4k at 1 Hz, which this VM's second core can drive): about 5 minutes.
	$(BUILD_DIR)/bin/ptrain-bench coordinator | tee bench/results/coordinator.jsonl
	$(BUILD_DIR)/bin/ptrain-bench coordinator --ranks 16384 --interval 4 \
	  | tee -a bench/results/coordinator.jsonl
	# A rank SIGKILLed under ptrain-launch, tiny and 1b QLoRA at 2 ranks: about 2 minutes.
	$(BUILD_DIR)/bin/ptrain-bench recovery | tee bench/results/recovery.jsonl
	# Real vocabularies for the tokenizer figures: the npm packages the tokenizer test installs.
	tests/unit/tokenizer/reference/run.sh $(BUILD_DIR)/tokenizer-reference \
	  $(BUILD_DIR)/bin/ptrain_tokenizer_reference_check >/dev/null
	$(BUILD_DIR)/bin/ptrain-bench data --text README.md docs/*.md \
	  $(foreach m,gpt2 llama2 mistral llama3,--tokenizer $(BUILD_DIR)/tokenizer-reference/models/$(m)) \
	  | tee bench/results/data.jsonl

docs: build
	$(BUILD_DIR)/bin/ptrain config-docs -o docs/config.md

format:
	clang-format -i $(SOURCES)

format-check:
	@clang-format --dry-run --Werror $(SOURCES) && echo "format-check: $(words $(SOURCES)) files clean"

clean:
	rm -rf $(BUILD_DIR)
