# EdgeGuard: `make run` sets up and runs the appliance on the bundled demo policy,
# `make test` sets up and runs every test. Both are idempotent and quick once set up.
SHELL := /bin/bash
PY := /usr/bin/python3
VENV := .venv
APT_PACKAGES := nftables python3-nftables python3-venv iproute2 iperf3 chromium
DEMO_POLICY ?= policies/examples/web-filter.yaml

.PHONY: run test setup apt lint unit bench golden clean

# The appliance in a lab of network namespaces, with clients making real traffic.
run: setup
	$(VENV)/bin/edgeguard demo --policy $(DEMO_POLICY)

test: setup lint
	$(VENV)/bin/python -m pytest -q

setup: apt $(VENV)/.installed

# Install only what is missing, so a set-up machine pays one dpkg-query.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# --system-site-packages makes Debian's python3-nftables (bound to the system libnftables)
# importable in the venv; see README "Why Debian's nftables binding".
$(VENV)/.installed: pyproject.toml
	@test -x $(VENV)/bin/python || $(PY) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

golden: setup
	$(VENV)/bin/python -m pytest -q tests/policies/test_golden.py --regen-golden

bench: setup
	$(VENV)/bin/python bench/compile_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The appliance disk image (docs/image.md): Debian bookworm's packages + our wheel, read-only
# root, state partition; amd64: GPT + systemd-boot, arm64 (Raspberry Pi 3/4): MBR + Debian's
# raspi-firmware, built through qemu-user (binfmt). Needs root; not part of `make test`.
ARCH ?= amd64
.PHONY: image image-test image-test-arm64
image: setup
	image/build.sh $(ARCH)

# Boots a copy of the amd64 image under qemu (TCG) with WAN/LAN taps in network namespaces it
# makes, checks it from the LAN, reboots it and checks its state survived (~3-4 min, root).
image-test:
	image/test.sh

# Boots the arm64 image's root (generic arm64 kernel, qemu -M virt, TCG) to the setup-token
# line; the Raspberry Pi firmware path itself can only be checked on a Pi.
image-test-arm64:
	image/test-arm64.sh
