"""The host side: what GradientLab ships to every host and runs there (the node runner, its
process facts, the pages it reads, the tap-readiness test).

Standard library and Playwright only, and nothing of the control plane: deploy copies this
folder to `~/.gradientlab/node/agent/` with `__main__.py` beside it as `runner.py`. Modules
import each other relatively, so the same files run as `gradientlab.agent` here and as `agent`
on a host."""
