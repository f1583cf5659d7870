# reshaper: the two commands a fresh machine needs are `make demo` and `make test`.
# Both install what they need, idempotently; downloads are cached outside the repo.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/reshaper
APT_PACKAGES := python3-venv python3-dev gcc clang libclang-rt-14-dev valgrind iproute2 iputils-ping iptables libnetfilter-queue-dev netsniff-ng strace
ENGINE_SOURCES := $(wildcard rules/engine/*.c rules/engine/*.h)
RING_SOURCES := $(wildcard ring/*.c ring/*.h ring/_ffi_build.py)
FUZZ_SECONDS ?= 60

.PHONY: demo test setup apt vm-prepare fuzz fuzz-long bench-engine kmod bench-kernel clean

setup: apt $(VENV)/.installed vm-prepare

# apt-get only when something is missing: the common case costs one dpkg query
apt:
	@missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(APT_PACKAGES) 2>/dev/null \
	  | awk '$$NF != "installed" {print $$1}'; \
	  for p in $(APT_PACKAGES); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done | sort -u); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml setup.py rules/_ffi_build.py $(ENGINE_SOURCES) $(RING_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --cache-dir $(CACHE)/pip --upgrade pip setuptools wheel cffi
	$(PY) -m pip install -q --cache-dir $(CACHE)/pip -e '.[test]'
	touch $@

# the Debian-kernel VM for kernel-module tests: host tools, kernel, initramfs, headers (cached)
vm-prepare: $(VENV)/.installed
	$(PY) -m tests.vm prepare

demo: setup
	$(VENV)/bin/reshaper demo

test: setup fuzz
	$(PY) -m pytest -q

# libFuzzer with ASan+UBSan over random programs and frames; seeds from the examples
FUZZ_BIN := build/fuzz_engine
$(FUZZ_BIN): $(ENGINE_SOURCES)
	mkdir -p build
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  rules/engine/fuzz_engine.c rules/engine/engine.c -o $@

fuzz: setup $(FUZZ_BIN)
	rm -rf build/fuzz-corpus && mkdir -p build/fuzz-corpus
	$(PY) -m tests.fuzz_seeds build/fuzz-corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -max_len=4096 \
	  -artifact_prefix=build/ build/fuzz-corpus >build/fuzz.log 2>&1 \
	  || { tail -60 build/fuzz.log; echo "fuzz: FINDING, see build/fuzz.log and build/crash-*"; exit 1; }
	@grep -E "^Done|^stat::(number_of_executed_units|new_units_added)" build/fuzz.log

fuzz-long:
	$(MAKE) fuzz FUZZ_SECONDS=3600

bench-engine: setup
	$(PY) -m tests.bench_engine

# reshaper.ko for the VM's Debian kernel (tests cache their own build in ~/.cache/reshaper/kmod)
kmod: setup
	$(MAKE) -C kmod KDIR=$$($(PY) -c 'from tests.vm import kdir; print(kdir())')

# kernel bridge, module and ring mode side by side inside the VM
bench-kernel: setup
	$(PY) -m tests.kmod.bench_kernel

clean:
	rm -rf build $(VENV) *.egg-info rules/_engine*.so
