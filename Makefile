# One-word entries. `make demo` and `make test` do all the set-up they need on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup system lint bench lock lock-check machines

demo: setup
	$(VENV)/bin/gradientlab demo

test: setup
	$(PY) -m pytest

# The Debian root filesystems the systemd-host tests boot with systemd-nspawn (tests/nspawn),
# which run only with GRADIENTLAB_MACHINE_TESTS=1 while they are work in progress:
# built once by debootstrap and cached in /var/cache/gradientlab/machines, rebuilt when their
# recipe changes (minutes, outside the suite's time). Says why and builds nothing without root.
machines: setup
	$(PY) -m tests.nspawn.rootfs bookworm

# ruff and mypy over every package; lint-imports checks the layers (pyproject's [tool.importlinter]).
lint: setup lock-check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy gradientlab flows tasks deployments analysis_app bench tests
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) -m bench.health_sweep

setup: system $(VENV)/.installed

# Debian's Chromium (branded Chrome ignores --load-extension) and OpenSSH for local hosts;
# iproute2 and nftables for the tests that put hosts behind NATs in network namespaces;
# PostgreSQL's server (with contrib's pg_trgm, which Prefect's migrations need) and Redis for the
# production-layout test, which starts private ones of each (tests/private_services.py): nothing
# has to be running on the machine.
system:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null \
		|| ! command -v ip >/dev/null || ! command -v nft >/dev/null \
		|| ! ls /usr/lib/postgresql/*/lib/pg_trgm.so >/dev/null 2>&1 \
		|| ! command -v redis-server >/dev/null || ! command -v mosquitto_passwd >/dev/null \
		|| ! command -v certutil >/dev/null; then \
		echo "installing chromium, openssh-server, iproute2, nftables, postgresql, redis-server, mosquitto and libnss3-tools from Debian"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium openssh-server openssh-client procps iproute2 nftables \
			postgresql redis-server mosquitto libnss3-tools >/dev/null; \
	fi

# requirements.lock pins every package the project installs, with its hashes (`make lock` writes
# it from pyproject.toml). uv installs it in a fraction of pip's time; pip if uv fails. The
# project itself goes in last, editable: a dependency added to pyproject.toml but not yet locked
# still installs (and `make lint` says the lock is stale).
# Compiled once here: machines that set PYTHONDONTWRITEBYTECODE (this kind does) would otherwise
# compile Prefect and SQLAlchemy from source in every process a test, the demo or a worker starts.
$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet uv || true
	if [ -x $(VENV)/bin/uv ]; then \
		$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) --require-hashes \
			-r requirements.lock && \
		$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'; \
	else \
		$(PY) -m pip install --quiet --require-hashes -r requirements.lock && \
		$(PY) -m pip install --quiet -e '.[dev]'; \
	fi
	touch $@

LOCK = $(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	--generate-hashes --no-header --quiet

lock: setup
	$(LOCK) -o requirements.lock

# Stale means pyproject.toml asks for something the lock does not give. Compiled again with the
# lock's own pins preferred (uv keeps an output file's versions), so a newer release of some
# unpinned dependency on the index does not make an unchanged lock stale.
lock-check: setup
	cp requirements.lock $(VENV)/requirements.check
	$(LOCK) -o $(VENV)/requirements.check
	diff -q $(VENV)/requirements.check requirements.lock >/dev/null \
		|| { echo "requirements.lock is stale: run make lock"; exit 1; }
