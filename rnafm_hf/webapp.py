"""
The Gradio page of the RNA-FM web app (`rnafm-hf serve`, `app.py` on Spaces); the work itself is
`rnafm_hf.server.RnaFmServer`.

Each action is also an API endpoint, which Gradio's Python client calls by name: `/embed`, `/fold` and
`/show_structure`:

```python
>>> from gradio_client import Client  # doctest: +SKIP
>>> client = Client("http://127.0.0.1:7860/")  # doctest: +SKIP
>>> npz, report = client.predict("ACGUACGU", None, 12, "mean", False, api_name="/embed")  # doctest: +SKIP

```
"""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path
from typing import Any

from .options import POOLINGS, SERVE_INSTALL
from .server import (
    EXAMPLE_INPUT,
    KEEP_RESULTS_SECONDS,
    FoldResult,
    RequestError,
    RnaFmServer,
    ServerLimits,
)

try:
    import gradio as gr
except ImportError as error:  # pragma: no cover - exercised by the CLI test with gradio hidden
    raise ImportError(f"The web app needs Gradio: {SERVE_INSTALL}") from error

TITLE = "RNA-FM"


def _guarded(function):
    """Run a request; refused input becomes a `gr.Error` with the message (shown on the page, and raised by the
    Python client). Gradio shows it as HTML, so the ids and sequences it quotes are escaped."""

    @functools.wraps(
        function
    )  # Gradio reads the signature (inputs, the progress tracker) through __wrapped__
    def run(*args: Any, **kwargs: Any):
        try:
            return function(*args, **kwargs)
        except RequestError as error:
            raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None

    return run


def build_app(server: RnaFmServer) -> gr.Blocks:
    """The page: sequences in (pasted or a FASTA file), an Embeddings tab and, with a structure model, a
    Secondary structure tab."""
    limits = server.limits
    # Gradio keeps copies of the files it serves; delete_cache drops those older than KEEP_RESULTS_SECONDS hourly.
    cache = (KEEP_RESULTS_SECONDS, KEEP_RESULTS_SECONDS)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=cache) as app:
        gr.Markdown(_heading(server))
        with gr.Row():
            pasted = gr.Textbox(
                label="Sequences: FASTA, or one sequence per line (A, C, G, U; T is read as U)",
                lines=6,
                max_lines=20,
                placeholder=">my_rna\nGGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU",
                max_length=limits.max_upload_bytes,
                elem_id="sequences",
            )
            upload = gr.File(
                label=f"... or upload a FASTA file (plain or .gz, up to {limits.max_upload_mb:g} MB)",
                file_types=[".fasta", ".fa", ".fna", ".txt", ".gz"],
                type="filepath",
                elem_id="upload",
            )
        gr.Examples([[EXAMPLE_INPUT]], inputs=[pasted], label="Example")
        with gr.Tabs():
            with gr.Tab("Embeddings", id="embeddings"):
                _embedding_tab(server, pasted, upload)
            if server.fold_pipeline is not None:
                with gr.Tab("Secondary structure", id="structure"):
                    _structure_tab(server, pasted, upload)
    app.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency)
    return app


def _heading(server: RnaFmServer) -> str:
    """The page's title, the models it serves (by folder name or Hub id) and its limits, as Markdown."""
    models = f"`{Path(server.model_name).name}`"
    if server.ss_model_name is not None:
        models += f", structures: `{Path(server.ss_model_name).name}`"
    return (
        f"# {TITLE}\nEmbeddings and secondary structures from the RNA-FM language model ({models}).\n\n"
        f"**Limits:** {server.limits.describe()} Requests wait their turn in a queue; for large sets, run "
        "`rnafm-hf embed` / `rnafm-hf fold` locally."
    )


def _embedding_tab(server: RnaFmServer, pasted: gr.Textbox, upload: gr.File) -> None:
    with gr.Row():
        layer = gr.Slider(
            0,
            server.num_layers,
            value=server.num_layers,
            step=1,
            label=f"Layer (0 = token embeddings, {server.num_layers} = last)",
        )
        pooling = gr.Radio(
            list(POOLINGS),
            value="none",
            label="Pooling: none = one vector per nucleotide (codon for mRNA-FM); mean or cls = one per sequence",
        )
        skip_invalid = gr.Checkbox(label="Skip invalid sequences (listed in the report)", value=False)
    run = gr.Button("Embed", variant="primary", elem_id="embed-button")
    result = gr.File(label="Embeddings (.npz: np.load(file)[id])", elem_id="embeddings-file")
    report = gr.Textbox(label="Report", lines=3, elem_id="embed-report")

    @_guarded
    def embed(text, file, layer_number, pooling_name, skip, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        """Embed the sequences: an .npz file with one float32 array per id, and a report."""
        records = server.read_request(text, file)
        path, report = server.embed(records, int(layer_number), pooling_name, bool(skip))
        return str(path), report

    run.click(
        embed,
        inputs=[pasted, upload, layer, pooling, skip_invalid],
        outputs=[result, report],
        api_name="embed",
        concurrency_limit=server.limits.concurrency,
        concurrency_id="embed",
    )


def _structure_tab(server: RnaFmServer, pasted: gr.Textbox, upload: gr.File) -> None:
    gr.Markdown(
        f"**Folding** takes up to {server.limits.max_fold_cost:,} nt² per request, the sum of the sequences' "
        f"squared lengths (the pair map of an L-nt sequence holds L² pairs): one sequence of up to "
        f"{server.longest_within_fold_cost:,} nt, or more shorter ones."
    )
    with gr.Row():
        canonical_only = gr.Checkbox(label="Canonical pairs only (AU, GC, GU)", value=False)
        skip_invalid = gr.Checkbox(label="Skip invalid sequences (listed in the report)", value=False)
        threshold = gr.Number(
            value=server.fold_pipeline.model.config.ss_threshold,
            minimum=0.0,
            maximum=1.0,
            label="Pairing-probability threshold (the model's default)",
        )
    run = gr.Button("Predict structure", variant="primary", elem_id="fold-button")
    dot_brackets = gr.Textbox(label="Dot-bracket", lines=4, elem_id="dot-bracket")
    chosen = gr.Dropdown(label="Show sequence", choices=[], interactive=True, elem_id="shown-sequence")
    with gr.Row():
        heat_map = gr.Image(label="Pairing probabilities", type="filepath", elem_id="heat-map")
        arcs = gr.Image(label="Arc diagram", type="filepath", elem_id="arc-diagram")
    files = gr.File(
        label="Downloads: all structures (.zip), and the shown sequence's .ct, .bpseq, .dbn, .npy",
        file_count="multiple",
        elem_id="structure-files",
    )
    report = gr.Textbox(label="Report", lines=4, elem_id="fold-report")
    state = gr.State()

    @_guarded
    def fold(text, file, canonical, cutoff, skip, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        """Fold the sequences: dot-brackets, the first sequence drawn, files to download, a report."""
        records = server.read_request(text, file)
        result = server.fold(records, bool(canonical), None if cutoff is None else float(cutoff), bool(skip))
        first = next(iter(result.stems))
        drawn = server.draw(result, first)
        return (
            result.dot_brackets(),
            gr.Dropdown(choices=list(result.stems), value=first),
            *_pictures_and_files(result, drawn),
            result.report,
            result,
        )

    @_guarded
    def show_structure(identifier: str, result: FoldResult | None):
        """Draw another folded sequence of the last result."""
        if result is None or not identifier:
            raise RequestError("Predict structures first, then choose a sequence to show.")
        return _pictures_and_files(result, server.draw(result, identifier))

    run.click(
        fold,
        inputs=[pasted, upload, canonical_only, threshold, skip_invalid],
        outputs=[dot_brackets, chosen, heat_map, arcs, files, report, state],
        api_name="fold",
        concurrency_limit=server.limits.concurrency,
        concurrency_id="fold",
    )
    chosen.input(
        show_structure, inputs=[chosen, state], outputs=[heat_map, arcs, files], api_name="show_structure"
    )


def _pictures_and_files(result: FoldResult, drawn: dict[str, Any]) -> tuple[str, str, list[str]]:
    """The heat map, the arc diagram, and the downloads: all structures zipped, then the shown sequence's files."""
    return str(drawn["heat_map"]), str(drawn["arcs"]), [str(result.archive), *map(str, drawn["files"])]


def launch(
    app: gr.Blocks, limits: ServerLimits, host: str | None = None, port: int | None = None, **options: Any
) -> gr.Blocks:
    """Start serving (blocking unless `prevent_thread_lock=True`), uploads capped at the limit and every request
    body at `limits.max_request_bytes`. `host`/`port` default to Gradio's (`GRADIO_SERVER_NAME`/
    `GRADIO_SERVER_PORT`, which Spaces set)."""
    # FastAPI's body limit (>= 0.164) answers 413 before reading a body whose Content-Length is over it, and stops
    # reading a chunked one as soon as it passes it: the server never holds more. Gradio passes app_kwargs on.
    app_kwargs = {**(options.pop("app_kwargs", None) or {}), "max_body_size": limits.max_request_bytes}
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=limits.max_upload_bytes,  # bytes: Gradio refuses bigger uploads with its own message
        app_kwargs=app_kwargs,
        **options,
    )
    return app


def serve(
    model: str | os.PathLike = "rna-fm",
    ss_model: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    limits: ServerLimits | None = None,
    device: str | None = None,
    **options: Any,
) -> gr.Blocks:
    """Load the models, build the page and serve it on `host:port` (what `rnafm-hf serve` runs)."""
    server = RnaFmServer(model, ss_model, limits, device)
    return launch(build_app(server), server.limits, host, port, **options)
