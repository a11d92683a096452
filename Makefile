# ecufl: the two commands of the README, and the steps they stand on.
#   make run    set everything up, then run the main job (quickstart on a local Flower fleet)
#   make test   set everything up, then run the whole test suite (what CI runs)
# Everything is installed by these rules: Debian packages (apt-get, as root or through sudo)
# and a virtual environment in .venv with ecufl installed editable (its C/C++ kernels compiled
# by CMake through scikit-build-core).

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# What `make run` installs: ecufl and its dependencies, nothing more. `make test` adds the extras:
# test (pytest, oelint-adv, import-linter; simulation = Ray; calibrate = scipy) and export
# (TensorFlow, for the heavy test that re-exports the shipped TFLite models).
RUN_EXTRAS  ?=
TEST_EXTRAS ?= test,export
PYTEST_ARGS ?= --durations=30

# Debian packages the main job needs: compilers for the native kernels (pip builds them with CMake)
# and Eigen for the C++ kernel.
DEB_PACKAGES := python3-venv python3-dev build-essential cmake ninja-build pkg-config libeigen3-dev
# ... and what the tests and board builds need on top: the ARM cross toolchain + emulator, glib for
# the qemu instruction-counting plugin, sshd + iproute2 for the netns "boards" of the deploy tests,
# OpenSSL + protobuf-c + zlib for the board agent, dpkg-dev for the armhf sysroot, chromium to render
# `ecufl thesis`'s page headless (tests/test_thesis.py), clang (libFuzzer + sanitizers) and the
# 32-bit x86 libraries for the fuzz harnesses and hostile-file tests (tests/fuzz; not gcc-multilib:
# it conflicts with the ARM cross compiler).
DEB_TEST_PACKAGES := gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf qemu-user libglib2.0-dev \
	openssh-server openssh-client iproute2 libssl-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev \
	dpkg-dev chromium clang libc6-dev-i386 lib32asan8 lib32ubsan1
# ... and the ones named after the compilers' versions, so the list holds beyond Debian 12's gcc 12
# and clang 14 (resolved once gcc and clang are installed)
DEB_VERSIONED = libclang-rt-$$(clang -dumpversion | cut -d. -f1)-dev \
	lib32gcc-$$(gcc -dumpversion | cut -d. -f1)-dev lib32stdc++-$$(gcc -dumpversion | cut -d. -f1)-dev

.PHONY: setup setup-test system-deps system-deps-test qemu-plugin run test bench arm agent-arm clean

# the stamp names the extras installed, so `make test` after `make run` installs the test extras
setup: system-deps $(VENV)/.installed-run
# the armhf sysroot: Debian's armhf libraries the board agent links and tests/test_arm_published.py
# measures OpenSSL's A9 routines in (a private apt configuration; nothing installed on this machine),
# and Debian's armhf Python that tests/test_arm_clientstack.py counts the client stack on
setup-test: system-deps system-deps-test qemu-plugin build/armhf-sysroot/PACKAGES build/armhf-python/PACKAGES $(VENV)/.installed-test

system-deps:
	@$(MAKE) --no-print-directory apt-install PKGS="$(DEB_PACKAGES)"

system-deps-test:
	@$(MAKE) --no-print-directory apt-install PKGS="$(DEB_TEST_PACKAGES)"
	@$(MAKE) --no-print-directory apt-install PKGS="$(DEB_VERSIONED)"

apt-install:
	@missing=$$(for p in $(PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

NATIVE_SOURCES := pyproject.toml CMakeLists.txt $(shell find kernels proto -name 'CMakeLists.txt' -o -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.proto' 2>/dev/null)

$(VENV)/.installed-run: $(NATIVE_SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.$(if $(RUN_EXTRAS),[$(RUN_EXTRAS)])'
	@touch $@

$(VENV)/.installed-test: $(NATIVE_SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(TEST_EXTRAS)]'
	@touch $@ $(VENV)/.installed-run

# The qemu TCG plugin that counts ARM instructions per class (kernels/arm/plugin/insncount.c),
# built against the plugin header of Debian's qemu source package (fetched by apt-get source from
# a private source list; the system's apt configuration is not changed) for Debian's qemu-user.
QEMU_PLUGIN_DIR := build/qemu-plugin
qemu-plugin: $(QEMU_PLUGIN_DIR)/libinsncount.so

$(QEMU_PLUGIN_DIR)/include/qemu-plugin.h: kernels/arm/plugin/fetch-qemu-header.sh
	sh kernels/arm/plugin/fetch-qemu-header.sh $(QEMU_PLUGIN_DIR)

$(QEMU_PLUGIN_DIR)/libinsncount.so: kernels/arm/plugin/insncount.c $(QEMU_PLUGIN_DIR)/include/qemu-plugin.h
	$(CC) -O2 -fPIC -shared -Wall -Wextra $$(pkg-config --cflags glib-2.0) -I$(QEMU_PLUGIN_DIR)/include \
	  -o $@ $< $$(pkg-config --libs glib-2.0)

# The main job: the quickstart scenario on a local fleet of real Flower processes (one SuperLink,
# four SuperNodes on loopback), started for the run and stopped after it; prints where the report is.
# The board build: the standalone trainers (and kernel variants) for the i.MX6 (Cortex-A9, NEON),
# static, in build/arm/. A Yocto eSDK environment (sourced environment-setup-*) exports
# CMAKE_TOOLCHAIN_FILE and CC/CXX/CFLAGS with its --sysroot: that toolchain file is used then.
ARM_BUILD     ?= build/arm
ARM_TOOLCHAIN := $(or $(CMAKE_TOOLCHAIN_FILE),$(CURDIR)/kernels/cmake/armv7-cortex-a9.cmake)
arm: system-deps system-deps-test
	cmake -S kernels -B $(ARM_BUILD) -DCMAKE_TOOLCHAIN_FILE=$(ARM_TOOLCHAIN) -DCMAKE_BUILD_TYPE=Release \
	  -DECUFL_BUILD_PYTHON=OFF -DECUFL_BUILD_TRAINERS=ON
	cmake --build $(ARM_BUILD) -j2
	@ls -l $(ARM_BUILD)/ecufl-train-*

# The board agent for the i.MX6: static ecufl-agent in build/agent-armv7-a9/, linked against
# OpenSSL, protobuf-c and zlib from Debian's armhf packages unpacked into build/armhf-sysroot
# (fleet/agent/fetch-armhf-sysroot.sh: a private apt configuration, nothing installed on this
# machine). `ecufl deploy build` puts it into the armv7-a9 bundle. In a Yocto eSDK environment
# (CMAKE_TOOLCHAIN_FILE set) the SDK's toolchain and sysroot are used instead of Debian's.
ARMHF_SYSROOT ?= build/armhf-sysroot
AGENT_ARM_BUILD ?= build/agent-armv7-a9
agent-arm: system-deps system-deps-test $(if $(CMAKE_TOOLCHAIN_FILE),,$(ARMHF_SYSROOT)/PACKAGES)
	cmake -S fleet/agent -B $(AGENT_ARM_BUILD) -DCMAKE_TOOLCHAIN_FILE=$(ARM_TOOLCHAIN) \
	  $(if $(CMAKE_TOOLCHAIN_FILE),,-DECUFL_AGENT_SYSROOT=$(CURDIR)/$(ARMHF_SYSROOT))
	cmake --build $(AGENT_ARM_BUILD) -j2
	@ls -l $(AGENT_ARM_BUILD)/ecufl-agent

$(ARMHF_SYSROOT)/PACKAGES: fleet/agent/fetch-armhf-sysroot.sh
	sh fleet/agent/fetch-armhf-sysroot.sh $(ARMHF_SYSROOT)

# Debian's armhf python3.11 + numpy + protobuf (and their closure) unpacked the same way, apart from
# the agent's sysroot: `ecufl calibrate --client-stack` counts a supernode board's Python client
# stack there under qemu-arm -cpu cortex-a9 (kernels/arm/clientstack.py).
ARMHF_PYTHON ?= build/armhf-python
$(ARMHF_PYTHON)/PACKAGES: fleet/agent/fetch-armhf-sysroot.sh
	sh fleet/agent/fetch-armhf-sysroot.sh --python $(ARMHF_PYTHON)

run: setup
	$(BIN)/ecufl fleet run scenarios/quickstart.toml

test: setup-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/ecufl bench kernels

clean:
	rm -rf build $(VENV)
