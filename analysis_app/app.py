"""GradientLab analysis: `streamlit run analysis_app/app.py`.

One page per question an analyst asks. The app only reads the fleet database; the flows
write it."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

# `streamlit run` puts only this folder on sys.path; the pages import the project's packages.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import streamlit as st  # noqa: E402

VIEWS = Path(__file__).resolve().parent / "views"

from analysis_app.auth import require_sign_in  # noqa: E402

st.set_page_config(page_title="GradientLab", page_icon=":material/hub:", layout="wide")
require_sign_in()

pages = [
    st.Page(VIEWS / "fleet_now.py", title="Fleet now", icon=":material/hub:", default=True),
    st.Page(VIEWS / "node.py", title="Node", icon=":material/dns:"),
    st.Page(VIEWS / "rewards.py", title="Rewards", icon=":material/paid:"),
    st.Page(VIEWS / "uptime.py", title="Uptime & taps", icon=":material/timer:"),
    st.Page(VIEWS / "incidents.py", title="Incidents", icon=":material/healing:"),
    st.Page(VIEWS / "cost.py", title="Economics", icon=":material/savings:"),
]
st.navigation(pages).run()


@st.cache_resource(show_spinner=False)
def _settle_the_heap() -> bool:
    """Once per server process, after the first page has imported pandas, Altair and the
    rest: move what lives now out of the garbage collector's reach. Its full passes otherwise
    walk that whole heap, and a read that happens to trigger one took 60 ms instead of 15."""
    gc.freeze()
    return True


_settle_the_heap()
