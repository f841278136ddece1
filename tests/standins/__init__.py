"""Local HTTP stand-ins for cloud APIs that have no emulator; the real SDK clients talk to them."""
