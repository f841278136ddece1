"""Debian root filesystems for the machines that tests boot with systemd-nspawn.

Built once per recipe by debootstrap from Debian's registry and cached outside the repository in
/var/cache/gradientlab/machines/<suite>-<recipe hash>; a changed recipe is a new folder (and the
old ones are removed). Run `python -m tests.nspawn.rootfs bookworm` (what `make machines` does)
so that building, which takes minutes, never counts in the suite's time.

What the image holds is what a Debian cloud image has before its first boot, plus the things a
test cannot download each session:
- systemd, dbus, logind (libpam-systemd), openssh-server, sudo, python3, cloud-init (its NoCloud
  seed is how a test hands a machine the user data a cloud would), locales with en_US.UTF-8
  (cloud-init's locale module fails without them; Debian's cloud images have them);
- Debian's chromium, preinstalled (as the first-boot script's `apt-get install -y chromium` would
  leave it: the script still runs and finds it installed);
- no python3-venv: the first-boot script installs it from Debian, and an inventory host without
  it is one of the cases deploy must explain;
- no SSH host keys: each machine gets its own, pinned, or cloud-init writes the one GradientLab
  generated;
- a wheelhouse of Playwright for the suite's Python, named by /etc/pip.conf (`find-links`,
  `no-index`): the image's local package mirror, so deploy's `pip install playwright==X` in a
  venv installs the same release without a 40 MB download per machine per session.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

CACHE = Path(os.environ.get("GRADIENTLAB_MACHINES_CACHE", "/var/cache/gradientlab/machines"))
MIRROR = "http://deb.debian.org/debian"

SUITE_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}

BASE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "dbus-user-session",
    "libpam-systemd",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "procps",
    "ca-certificates",
]
# installed in a chroot after debootstrap, with apt's dependency resolution
EXTRA_PACKAGES = ["chromium", "cloud-init", "libnss3-tools", "locales"]

# run in the chroot after the packages: what turns a debootstrap folder into a bootable image
CONFIGURE_SH = r"""set -e
rm -f /etc/ssh/ssh_host_*
# as Debian's cloud images have it: cloud-init's locale module sets en_US.UTF-8, and Debian's
# locale-gen (which ignores its arguments) builds only what /etc/locale.gen names
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
locale-gen >/dev/null
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
# nspawn's console: no getty on it (the machines are reached over SSH)
systemctl mask console-getty.service getty@tty1.service >/dev/null 2>&1 || true
systemctl enable ssh.service >/dev/null
# cloud-init looks only at the NoCloud seed a test writes; without one a machine disables it
cat > /etc/cloud/cloud.cfg.d/90-gradientlab-machines.cfg <<'EOF'
datasource_list: [NoCloud, None]
EOF
cat > /etc/pip.conf <<'EOF'
[global]
find-links = /var/cache/gradientlab-wheels
no-index = true
EOF
apt-get clean
rm -rf /var/lib/apt/lists/*
"""


def recipe(suite: str) -> dict[str, object]:
    return {
        "suite": suite,
        "mirror": MIRROR,
        "base": BASE_PACKAGES,
        "extra": EXTRA_PACKAGES,
        "configure": CONFIGURE_SH,
        "playwright": version("playwright"),
        "format": 1,
    }


def recipe_hash(suite: str) -> str:
    return hashlib.sha256(json.dumps(recipe(suite), sort_keys=True).encode()).hexdigest()[:12]


def rootfs_path(suite: str) -> Path:
    return CACHE / f"{suite}-{recipe_hash(suite)}"


def is_built(suite: str) -> bool:
    return (rootfs_path(suite) / ".gradientlab-recipe.json").is_file()


def why_no_machines() -> str | None:
    """None when this machine can build and boot nspawn machines; else the reason."""
    if os.geteuid() != 0:
        return "systemd-nspawn machines need root"
    for tool in ("systemd-nspawn", "debootstrap", "ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make system installs systemd-container, debootstrap)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    return None


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def _wheelhouse(suite: str, into: Path) -> None:
    py = SUITE_PYTHON[suite]
    into.mkdir(parents=True, exist_ok=True)
    _run(
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux1_x86_64",
        "--python-version",
        py,
        "--implementation",
        "cp",
        "-d",
        str(into),
        f"playwright=={version('playwright')}",
        "pip",
        "setuptools",
    )


def build(suite: str) -> Path:
    """The cached root filesystem of `suite`, built now if its recipe has none yet."""
    target = rootfs_path(suite)
    with _build_lock():
        if is_built(suite):
            return target
        work = CACHE / f".build-{suite}-{recipe_hash(suite)}"
        if work.exists():
            shutil.rmtree(work)
        debs = CACHE / f".debs-{suite}"  # the downloaded packages, kept for the next recipe
        debs.mkdir(exist_ok=True)
        _run(
            "debootstrap",
            f"--cache-dir={debs}",
            "--variant=minbase",
            "--include=" + ",".join(BASE_PACKAGES),
            suite,
            str(work),
            MIRROR,
        )
        shutil.copy("/etc/resolv.conf", work / "etc/resolv.conf")
        env = "DEBIAN_FRONTEND=noninteractive"
        _run("chroot", str(work), "sh", "-c", "apt-get update -qq")
        _run(
            "chroot",
            str(work),
            "sh",
            "-c",
            f"{env} apt-get install -y -qq --no-install-recommends " + " ".join(EXTRA_PACKAGES),
        )
        _wheelhouse(suite, work / "var/cache/gradientlab-wheels")
        _run("chroot", str(work), "sh", "-c", CONFIGURE_SH)
        (work / ".gradientlab-recipe.json").write_text(json.dumps(recipe(suite), indent=1))
        os.replace(work, target)
        for old in CACHE.glob(f"{suite}-*"):
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", default=["bookworm"])
    args = parser.parse_args()
    reason = why_no_machines()
    if reason:
        print(f"machines: not built here: {reason}")
        return
    for suite in args.suites:
        print(f"machines: {suite} at {build(suite)}")


if __name__ == "__main__":
    main()
