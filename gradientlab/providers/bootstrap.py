"""The first-boot script every cloud VM gets: the same cloud-init user data for OCI, GCP, Azure.

It creates GradientLab's login user with the operator's key, installs the SSH host key that
GradientLab generated (so the key is pinned from the first connection, no trust-on-first-use),
and installs what the deploy flow needs: Debian's `chromium` (elsewhere the system libraries for
Playwright's Chromium, which deploy installs), `python3-venv`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from importlib.metadata import version

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class HostKeyPair:
    """An SSH host key made by GradientLab; its public half is what we pin."""

    private_openssh: str
    public: str  # "ssh-ed25519 AAAA..."

    @classmethod
    def generate(cls) -> HostKeyPair:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        return cls(private, public)


# Debian's chromium is a real package (branded Chrome 137+ ignores --load-extension). Ubuntu's
# is a snap, which cannot read the node's hidden folders, and Oracle Linux has none: there,
# deploy installs Playwright's Chromium for GradientLab's user, and this script (as root) only
# installs the system libraries it needs. See gradientlab.node.browser.
BROWSER_SETUP_SH = f"""set -e
. /etc/os-release
case "$ID $ID_LIKE" in
  *ubuntu*) family=ubuntu ;;
  *debian*) family=debian ;;
  *) family=other ;;
esac
if [ "$family" = debian ]; then
  apt-get install -y chromium
elif command -v apt-get >/dev/null; then
  python3 -m venv /opt/gradientlab-browser-deps
  /opt/gradientlab-browser-deps/bin/pip install --quiet playwright=={version("playwright")}
  /opt/gradientlab-browser-deps/bin/python -m playwright install-deps chromium
elif command -v dnf >/dev/null; then
  dnf install -y nss atk at-spi2-atk cups-libs libdrm libxkbcommon libXcomposite libXdamage \
    libXrandr libXfixes mesa-libgbm pango alsa-lib
fi
"""


def cloud_init(ssh_user: str, authorized_key: str, host_key: HostKeyPair, host_name: str) -> str:
    """`#cloud-config` user data; Ubuntu images on all three clouds run it on first boot."""
    config = {
        "hostname": host_name,
        "users": [
            "default",
            {
                "name": ssh_user,
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": [authorized_key],
                # no sudo at all: the runner needs no root, the cloud's API reboots and stops
                # the VM, and the lingering below is enabled here, as root
            },
        ],
        "ssh_pwauth": False,
        "disable_root": True,
        "ssh_deletekeys": True,
        # the key below is the only one: with it written, "generate ed25519" generates nothing
        # (an empty list is what cloud-init's schema refuses: "[] is too short")
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {
            "ed25519_private": host_key.private_openssh,
            "ed25519_public": host_key.public,
        },
        "package_update": True,
        # python3-venv makes the runner's venv (with its own pip: deploy installs Playwright
        # there). Not python3-pip: apt installs its recommends with it (build-essential,
        # python3-dev: hundreds of MB on a 1 GB VM's first boot), and nothing uses it.
        "packages": ["python3-venv", "procps"],
        "runcmd": [
            ["sh", "-c", BROWSER_SETUP_SH],
            ["loginctl", "enable-linger", ssh_user],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def cloud_init_b64(
    ssh_user: str, authorized_key: str, host_key: HostKeyPair, host_name: str
) -> str:
    return base64.b64encode(
        cloud_init(ssh_user, authorized_key, host_key, host_name).encode()
    ).decode()
