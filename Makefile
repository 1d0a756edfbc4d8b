# compactor — the research plan as make targets. Every target installs what it needs first.
#   make demo  [MODEL=dir]   info + generation + WikiText-2 perplexity on a model (default fixture)
#   make test                the CPU test suite (ctest); make test-gpu runs the GPU-labelled tests
#   make bench [MODEL=dir]   CPU prefill/decode benchmark
MODEL     ?= ../shared/models/fixture-llama-sp
BUILD     ?= build
JOBS      ?= $(shell nproc)
PROMPT    ?= Once upon a time, in a small village by the sea, there lived
WINDOWS   ?= 0
CMAKE_ARGS ?=
BIN       := $(BUILD)/bin/compactor

.PHONY: deps configure build demo test test-gpu bench clean

deps:
	bash scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BIN) info $(MODEL)
	$(BIN) generate $(MODEL) --prompt "$(PROMPT)" --max-tokens 48 --seed 1
	$(BIN) eval $(MODEL) --tasks ppl --data wikitext2 --ctx 512 --limit-windows $(WINDOWS)

test: build
	cd $(BUILD) && ctest --output-on-failure -LE gpu -j $(JOBS)

test-gpu: build
	cd $(BUILD) && ctest --output-on-failure -L gpu

bench: build
	$(BIN) bench $(MODEL) --batch 1,4 --prompt 128 --gen 32

clean:
	rm -rf $(BUILD)
