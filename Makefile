# Fresh-machine entry points (README.md). Each target installs missing dependencies first.
BUILD_DIR ?= build
JOBS ?= 2
MPIRUN ?= mpirun --oversubscribe $(if $(filter 0,$(shell id -u)),--allow-run-as-root,)
SOURCES = $(shell git ls-files '*.cpp' '*.h' 2>/dev/null)

.PHONY: deps configure build test quickstart bench format format-check docs clean

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

# The strongest real job that exists today: every rank reports itself, then the comm benchmark.
quickstart: build
	$(MPIRUN) -np 2 $(BUILD_DIR)/bin/ptrain env --set output_dir=outputs/quickstart
	$(MPIRUN) -np 2 $(BUILD_DIR)/bin/ptrain-bench comm --max-bytes 4194304 --seconds 0.05

# Full benchmark runs; results (one JSON object per line) go to bench/results/.
bench: build
	mkdir -p bench/results
	$(MPIRUN) -np 2 $(BUILD_DIR)/bin/ptrain-bench comm | tee bench/results/comm-np2.jsonl
	$(MPIRUN) -np 4 $(BUILD_DIR)/bin/ptrain-bench comm | tee bench/results/comm-np4.jsonl

docs: build
	$(BUILD_DIR)/bin/ptrain config-docs -o docs/config.md

format:
	clang-format -i $(SOURCES)

format-check:
	@clang-format --dry-run --Werror $(SOURCES) && echo "format-check: $(words $(SOURCES)) files clean"

clean:
	rm -rf $(BUILD_DIR)
