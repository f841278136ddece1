"""Keep GradientLab's SSH key in a Prefect Secret block, so that every worker uses the same one.

    python -m deployments.ssh_key [--block gradientlab-ssh-key] [--from PATH | --generate]

By default it stores the key this machine already has (`.gradientlab/keys/id_ed25519`, made on
first use), or a new Ed25519 key with `--generate`. The private key goes from the file (or
memory) straight into the block: never onto a command line or into a log. It prints the public
key, for the hosts' authorized_keys. Workers then run with
`GRADIENTLAB_SSH_KEY_BLOCK=gradientlab-ssh-key` and need no key file. An existing block is
replaced only with `--overwrite`: hosts that trust the old key would refuse the new one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect.blocks.system import Secret

from gradientlab.remote.keys import (
    OperatorKeyUnavailable,
    ensure_operator_key,
    operator_key_path,
    parse_private_key,
    public_key_line,
)

DEFAULT_BLOCK = "gradientlab-ssh-key"


def new_private_key() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def save_key_block(text: str, block: str, overwrite: bool = False) -> str:
    """Store a private key as a Secret block; returns its public key line."""
    public = public_key_line(parse_private_key(text, "the key to store"))
    Secret(value=text).save(block, overwrite=overwrite)
    return public


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.ssh_key")
    parser.add_argument("--block", default=DEFAULT_BLOCK, help="the Secret block's name")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from", dest="path", type=Path, help="a private key file to store")
    source.add_argument("--generate", action="store_true", help="store a new Ed25519 key")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing block")
    args = parser.parse_args(argv)
    if args.generate:
        text = new_private_key()
    else:
        path = args.path or ensure_operator_key(operator_key_path())
        text = path.read_text()
    try:
        public = save_key_block(text, args.block, args.overwrite)
    except OperatorKeyUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:  # the block exists and --overwrite was not given
        print(f"block {args.block}: {exc} (pass --overwrite to replace the key)", file=sys.stderr)
        return 1
    print(f"saved the SSH key as Secret block {args.block}; its public key:")
    print(public)
    return 0


if __name__ == "__main__":
    sys.exit(main())
