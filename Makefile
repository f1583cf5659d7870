# reshaper: the two commands a fresh machine needs are `make demo` and `make test`.
# Both install what they need, idempotently; downloads are cached outside the repo.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/reshaper
# what the appliance and the demo need, then what the tests and benchmarks add
APT_PACKAGES := python3-venv python3-dev gcc iproute2 iputils-ping iptables libnetfilter-queue-dev \
  clang libxdp-dev libbpf-dev
# what the unit tests run besides Python: clang (the engine's names), tshark (pcapng as written),
# systemd-analyze (the unit's exposure)
APT_UNIT_PACKAGES := clang tshark systemd
APT_TEST_PACKAGES := $(APT_UNIT_PACKAGES) libclang-rt-14-dev valgrind netsniff-ng strace iperf3 tcpreplay \
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-system-arm qemu-user-static binfmt-support debootstrap \
  lintian python3-cffi-backend python3-yaml
ENGINE_SOURCES := $(wildcard rules/engine/*.c rules/engine/*.h)
RING_SOURCES := $(wildcard ring/*.c ring/*.h ring/bpf/*.c)
# device settings and privileges every mode uses, compiled into the same extension
DEVICE_SOURCES := $(wildcard reshaper/*.c reshaper/*.h)
# NFQUEUE mode's per-packet call
NFQUEUE_SOURCES := $(wildcard bridge/modes/*.c bridge/modes/*.h)
# `reshaper apply`'s loop
APPLY_SOURCES := $(wildcard bridge/*.c bridge/*.h)
FUZZ_SECONDS ?= 60

.PHONY: demo test test-unit setup test-setup apt apt-unit apt-test vm-prepare armhf-prepare beaglebone debian bench-armhf fuzz fuzz-long bench-engine bench-schedule bench-apply kmod bench-kernel bench bench-vm clean

setup: apt $(VENV)/.installed

# the tests also need the fuzzer, qemu for the kernel-module VMs (x86 and armhf), cross compilers
test-setup: setup apt-test vm-prepare armhf-prepare

# apt-get only when something is missing: the common case costs one dpkg query
define apt_install
	@missing=$$(for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

apt:
	$(call apt_install,$(APT_PACKAGES))

apt-unit:
	$(call apt_install,$(APT_UNIT_PACKAGES))

apt-test:
	$(call apt_install,$(APT_TEST_PACKAGES))

$(VENV)/.installed: pyproject.toml setup.py reshaper/_ffi_build.py kmod/reshaper_genl.h $(ENGINE_SOURCES) $(RING_SOURCES) \
  $(DEVICE_SOURCES) $(NFQUEUE_SOURCES) $(APPLY_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --cache-dir $(CACHE)/pip --upgrade pip setuptools wheel cffi
	$(PY) -m pip install -q --cache-dir $(CACHE)/pip -e '.[test,bench]'
	touch $@

# the Debian-kernel VM for kernel-module tests: host tools, kernel, initramfs, headers (cached)
vm-prepare: $(VENV)/.installed apt-test
	$(PY) -m reshaper.lab.vm prepare

# armhf: kernel, busybox, a debootstrap rootfs tarball (~8 min cold, 1 s warm; ~/.cache/reshaper/armhf)
armhf-prepare: $(VENV)/.installed apt-test
	$(PY) -m reshaper.lab.vm.armhf

# BeagleBone bundle: armhf wheel, module for Debian's armmp kernel, DKMS sources, and the armhf
# Debian packages (dist/beaglebone/)
beaglebone: setup apt-test
	deploy/beaglebone/build.sh

# Debian packages for x86_64 Debian hosts: reshaper_VER_amd64.deb, reshaper-dkms_VER_all.deb (dist/debian/)
debian: setup
	deploy/debian/build-amd64.sh

bench-armhf: test-setup
	mkdir -p build
	$(PY) -m reshaper.bench.engine_armhf --json build/engine-armhf.json

demo: setup
	$(VENV)/bin/reshaper demo

# Two pytest runs side by side, one a core: tests/armhf (the emulated board's one qemu thread
# for most of its time, the critical path) and all the others; the board's log is printed
# after the others'. Either failing fails the target. set -m: a job put in the background
# without job control ignores SIGINT, and so would every process it starts.
TEST_ARMHF_LOG := build/test-armhf.log
test: test-setup fuzz
	mkdir -p build
	set -m; $(PY) -m pytest -q --durations=15 tests/armhf >$(TEST_ARMHF_LOG) 2>&1 & armhf=$$!; \
	  others=0; $(PY) -m pytest -q --durations=15 --ignore=tests/armhf || others=$$?; \
	  armhf_status=0; wait $$armhf || armhf_status=$$?; \
	  echo "=== tests/armhf ($(TEST_ARMHF_LOG))"; cat $(TEST_ARMHF_LOG); \
	  echo "make test: pytest exit status $$others (tests/armhf excluded), $$armhf_status (tests/armhf)"; \
	  [ $$others = 0 ] && [ $$armhf_status = 0 ]

# the tests that need no root, no network and no VM (tests/conftest.py marks them unit), in under a minute
test-unit: setup apt-unit
	$(PY) -m pytest -q -m unit

# libFuzzer with ASan+UBSan over random programs and frames; seeds from the examples
FUZZ_BIN := build/fuzz_engine
$(FUZZ_BIN): $(ENGINE_SOURCES) | apt-test
	mkdir -p build
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  rules/engine/fuzz_engine.c rules/engine/engine.c -o $@

fuzz: setup apt-test $(FUZZ_BIN)
	rm -rf build/fuzz-corpus && mkdir -p build/fuzz-corpus
	$(PY) -m tests.fuzz_seeds build/fuzz-corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -max_len=4096 \
	  -artifact_prefix=build/ build/fuzz-corpus >build/fuzz.log 2>&1 \
	  || { tail -60 build/fuzz.log; echo "fuzz: FINDING, see build/fuzz.log and build/crash-*"; exit 1; }
	@grep -E "^Done|^stat::(number_of_executed_units|new_units_added)" build/fuzz.log

fuzz-long:
	$(MAKE) fuzz FUZZ_SECONDS=3600

# with bench-armhf's figures when they are there, plotted beside these
bench-engine: setup
	mkdir -p build
	$(PY) -m reshaper.bench.engine --json build/engine.json --plot build/engine-rules.png \
	  $$(test -f build/engine-armhf.json && echo --with build/engine-armhf.json)

# docs/schedules.md's experiment (examples/experiment.yaml on a UDP stream, with its plot) and the
# phase switch error in ring mode (root: network namespaces) and in kernel mode in the VM
bench-schedule: setup vm-prepare
	$(PY) -m reshaper.bench.schedule --vm --out docs/schedules-run

# `reshaper apply` and tcprewrite on the same capture and rewrites, side by side
bench-apply: setup apt-test
	$(PY) -m reshaper.bench.apply_speed

# reshaper.ko for the VM's Debian kernel (tests cache their own build in ~/.cache/reshaper/kmod)
kmod: setup vm-prepare
	$(MAKE) -C kmod KDIR=$$($(PY) -m reshaper.lab.vm kdir)

# every mode side by side: throughput, latency, CPU per frame, report and plots
bench: setup apt-test
	$(VENV)/bin/reshaper bench --out build/bench

# the same inside the Debian-kernel VM, kernel mode included
bench-vm: setup vm-prepare
	$(VENV)/bin/reshaper bench --vm --out build/bench-vm

# timing accuracy, netem and ring mode side by side in the same VM (TCG: the generator tops out near 7k frames/s)
.PHONY: bench-timing-vm
bench-timing-vm: setup vm-prepare
	$(PY) -m reshaper.bench.timing --vm --wait-load 1.0 --rates 1000,5000 --loss-pps 5000 --json build/timing-vm.json

# kernel bridge, module and ring mode side by side inside the VM
bench-kernel: setup vm-prepare
	$(PY) -m reshaper.bench.kernel

# rules/schema.json from the field tables (rules/fields.py); tests/test_schema.py fails when it is stale
.PHONY: schema
schema: setup
	$(PY) -m reshaper.rules.schema

clean:
	rm -rf build $(VENV) *.egg-info reshaper/_native*.so
