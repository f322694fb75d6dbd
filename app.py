"""
The RNA-FM web app as a Hugging Face Space (Gradio SDK): the same page as `rnafm-hf serve`.

The Space's `requirements.txt` holds `rnafm-hf[serve]` (this repository, e.g. `git+https://...`); its variables
name the models, converted folders in the Space or Hub ids:

- `RNAFM_MODEL`: RNA-FM (default `rna-fm`);
- `RNAFM_SS_MODEL`: the secondary-structure model (default `rna-fm-ss`; empty: no structure tab);
- `RNAFM_MAX_SEQUENCES`, `RNAFM_MAX_NUCLEOTIDES`, `RNAFM_MAX_UPLOAD_MB`, `RNAFM_CONCURRENCY`,
  `RNAFM_QUEUE_SIZE`, `RNAFM_MAX_FOLD_COST`: the limits (as `rnafm-hf serve --max-sequences` and so on).

Locally, `python app.py` serves it on Gradio's default address (`GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`).
"""

import os

from rnafm_hf.server import RnaFmServer, ServerLimits
from rnafm_hf.webapp import build_app, launch

limits = ServerLimits.from_environment()
server = RnaFmServer(
    os.environ.get("RNAFM_MODEL", "rna-fm"), os.environ.get("RNAFM_SS_MODEL", "rna-fm-ss") or None, limits
)
demo = build_app(server)

if __name__ == "__main__":
    launch(demo, limits)
