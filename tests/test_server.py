"""The web app: the work behind it (`RnaFmServer`), every action through Gradio's Python client against the app
served on 127.0.0.1, the queues, `rnafm-hf serve`, `app.py`, and one submission in a real headless browser."""

from __future__ import annotations

import dataclasses
import gzip
import os
import runpy
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from original_checkpoints import write_original_checkpoint, write_secondary_structure_checkpoint

from rnafm_hf import RnaFmTokenizer, embed, load_original_checkpoint
from rnafm_hf.conversion import convert_checkpoint
from rnafm_hf.server import RequestError, RnaFmServer, ServerLimits, parse_pasted
from rnafm_hf.structure import SecondaryStructure

gr = pytest.importorskip("gradio", reason="the web app needs the serve extra: pip install 'rnafm-hf[serve]'")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from rnafm_hf.webapp import build_app, launch  # noqa: E402

TRNA_PHE = "GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA"
HAIRPIN = "GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU"
TWO = f">tRNA-Phe yeast\n{TRNA_PHE}\n>hairpin\n{HAIRPIN}\n"
LIMITS = ServerLimits(max_sequences=4, max_nucleotides=400, max_upload_mb=0.01)


@pytest.fixture(scope="module")
def rna_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rna-fm")
    load_original_checkpoint(write_original_checkpoint(folder.parent / "rna.pth", seed=5)).save_pretrained(
        folder
    )
    RnaFmTokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ss_folder(tmp_path_factory) -> Path:
    checkpoint = write_secondary_structure_checkpoint(tmp_path_factory.mktemp("ss") / "RNA-FM-ResNet.pth")
    return convert_checkpoint(checkpoint, checkpoint.parent / "rna-fm-ss", verify=False).output_dir


@pytest.fixture(scope="module")
def server(rna_folder, ss_folder) -> RnaFmServer:
    return RnaFmServer(rna_folder, ss_folder, LIMITS, device="cpu")


@pytest.fixture(scope="module")
def client(server):
    app = launch(
        build_app(server), server.limits, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True
    )
    yield Client(app.local_url, verbose=False)
    app.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_npz(path) -> dict[str, np.ndarray]:
    """The arrays of an embeddings.npz by FASTA id, in input order: its index lists (id, name) pairs."""
    with np.load(path) as arrays:
        return {str(identifier): arrays[name] for identifier, name in arrays["index"]}


# ---- the work behind the page ------------------------------------------------------------------------------


def test_pasted_text_is_fasta_or_one_sequence_per_line():
    assert parse_pasted(TWO) == [("tRNA-Phe", TRNA_PHE), ("hairpin", HAIRPIN)]
    assert parse_pasted(" ACGU\n\nggcc \n") == [("sequence_1", "ACGU"), ("sequence_2", "ggcc")]
    assert parse_pasted("  \n") == []
    with pytest.raises(RequestError, match="The pasted text: not a valid FASTA file.*line 1: Expected '>'"):
        parse_pasted("ACGU\n>b\nGG\n")


def test_requests_are_held_to_the_limits(server, tmp_path):
    with pytest.raises(RequestError, match="at most 4 per request"):
        server.read_request("\n".join(["ACGU"] * 5), None)
    with pytest.raises(RequestError, match="401 nt in all; this server takes at most 400 nt"):
        server.read_request("A" * 401, None)
    with pytest.raises(RequestError, match="No sequences"):
        server.read_request("", None)
    big = tmp_path / "big.fasta"
    big.write_text(">a\n" + "ACGU" * 5000 + "\n")
    with pytest.raises(RequestError, match=r"big.fasta is 0\.02 MB; this server takes files up to 0\.01 MB"):
        server.read_request(None, big)
    bomb = tmp_path / "bomb.fasta.gz"  # 2 KB that decompress to 1 MB
    with gzip.open(bomb, "wt") as stream:
        stream.write(">a\n" + "ACGU" * 2**18 + "\n")
    assert bomb.stat().st_size < 0.01 * 2**20
    with pytest.raises(RequestError, match=r"bomb.fasta.gz decompresses to more than 0\.01 MB"):
        server.read_request(None, bomb)
    small = tmp_path / "two.fasta.gz"
    with gzip.open(small, "wt") as stream:
        stream.write(TWO)
    assert server.read_request(None, small) == parse_pasted(TWO)
    with pytest.raises(RequestError, match="The pasted text is over 0.01 MB"):
        server.read_request("ACGU" * 2**12, None)
    with pytest.raises(RequestError, match="not both"):
        server.read_request("ACGU", big)
    assert LIMITS.describe() == "Up to 4 sequences and 400 nt per request; uploaded files up to 0.01 MB."
    with pytest.raises(ValueError, match="max_sequences must be at least 1"):
        ServerLimits(max_sequences=0)


def test_the_server_embeds_what_the_library_embeds(server, rna_folder):
    records = parse_pasted(TWO)
    path, report = server.embed(records, 1, "mean")
    expected = dict(embed(records, rna_folder, layers=1, pooling="mean", progress=False, log=None))
    arrays = read_npz(path)
    assert list(arrays) == ["tRNA-Phe", "hairpin"]
    for name, array in expected.items():
        np.testing.assert_array_equal(arrays[name], array)
    assert "2 arrays (hidden,), layer 1, pooling mean" in report
    with pytest.raises(RequestError, match=r"Layer 3 does not exist: choose 0 \(embeddings\) to 2 \(last\)"):
        server.embed(records, 3, "mean")
    with pytest.raises(RequestError, match="Pooling 'max' is unknown"):
        server.embed(records, 1, "max")


def test_the_server_folds_like_the_fold_command_and_draws(server):
    result = server.fold(parse_pasted(TWO))
    assert list(result.stems) == ["tRNA-Phe", "hairpin"]
    written = SecondaryStructure.read(result.folder / "hairpin.ct")
    assert result.dot_brackets().splitlines()[3:6] == [">hairpin", HAIRPIN, written.to_dot_bracket()]
    with zipfile.ZipFile(result.archive) as archive:
        assert {"hairpin.ct", "hairpin.bpseq", "hairpin.dbn", "hairpin.npy", "summary.tsv"} <= set(
            archive.namelist()
        )
    drawn = server.draw(result, "tRNA-Phe")
    assert drawn["heat_map"].read_bytes()[:4] == b"\x89PNG" and drawn["arcs"].read_bytes()[:4] == b"\x89PNG"
    assert [path.name for path in drawn["files"]] == [
        "tRNA-Phe.ct",
        "tRNA-Phe.bpseq",
        "tRNA-Phe.dbn",
        "tRNA-Phe.npy",
    ]
    with pytest.raises(RequestError, match=r"record 3 \('hairpin'\): duplicate id \(first at record 2\)"):
        server.fold(parse_pasted(TWO + f">hairpin\n{HAIRPIN}\n"))
    # The rules of rnafm-hf fold and embed: listed before any compute, skipped only when asked.
    with pytest.raises(RequestError, match=r"record 2 \('long'\): 1100 nt, longer than the 1022 nt") as error:
        server.fold([("short", HAIRPIN), ("long", "ACGU" * 275)])
    assert "tick 'Skip invalid sequences'" in str(error.value)
    result = server.fold([("short", HAIRPIN), ("long", "ACGU" * 275)], skip_invalid=True)
    assert list(result.stems) == ["short"] and "Skipping record 2 ('long')" in result.report
    with zipfile.ZipFile(result.archive) as archive:
        assert not [
            name for name in archive.namelist() if name.startswith(".")
        ]  # fold's bookkeeping stays out


# ---- every action through the Python client, against the served app -----------------------------------------


def test_embed_through_the_client_pasted_and_uploaded(client, rna_folder, tmp_path):
    expected = dict(embed(parse_pasted(TWO), rna_folder, progress=False, log=None))
    path, report = client.predict(TWO, None, 2, "none", False, api_name="/embed")
    arrays = read_npz(path)
    assert {name: array.shape for name, array in arrays.items()} == {
        "tRNA-Phe": (76, 32),
        "hairpin": (56, 32),
    }
    np.testing.assert_array_equal(arrays["hairpin"], expected["hairpin"])
    fasta = tmp_path / "two.fasta"
    fasta.write_text(TWO)
    path, _ = client.predict("", handle_file(fasta), 2, "cls", False, api_name="/embed")
    assert read_npz(path)["tRNA-Phe"].shape == (32,)


def test_an_upload_over_the_limit_is_refused(client, tmp_path):
    big = tmp_path / "big.fasta"
    big.write_text(">a\n" + "ACGU" * 5000 + "\n")
    with pytest.raises(Exception, match="exceeds the maximum file size of 10485 bytes"):  # checked by Gradio
        client.predict("", handle_file(big), 2, "none", False, api_name="/embed")


def test_bad_input_gets_the_library_messages_through_the_client(client):
    with pytest.raises(AppError, match=r"record 2 \('b'\): letters outside the model's alphabet.*'X' at 3"):
        client.predict(">a\nACGU\n>b\nACXGU\n", None, 2, "none", False, api_name="/embed")
    path, report = client.predict(">a\nACGU\n>b\nACXGU\n", None, 2, "none", True, api_name="/embed")
    assert list(read_npz(path)) == ["a"] and "Skipping record 2 ('b')" in report
    with pytest.raises(AppError, match="at most 4 per request"):
        client.predict("\n".join(["ACGU"] * 5), None, 2, "none", False, api_name="/embed")
    with pytest.raises(AppError, match="Value 7 is greater than maximum value 2"):  # Gradio checks the slider
        client.predict("ACGU", None, 7, "none", False, api_name="/embed")


def test_fold_and_show_structure_through_the_client(client, server):
    dot_brackets, chosen, heat_map, arcs, files, report, *_ = client.predict(
        TWO, None, False, 0.34, False, api_name="/fold"
    )
    expected = server.fold_pipeline(HAIRPIN, threshold=0.34)["dot_bracket"]
    assert dot_brackets.splitlines()[3:6] == [">hairpin", HAIRPIN, expected]
    assert chosen["value"] == "tRNA-Phe" and [choice[0] for choice in chosen["choices"]] == [
        "tRNA-Phe",
        "hairpin",
    ]
    assert Path(heat_map).read_bytes()[:4] == b"\x89PNG" and Path(arcs).read_bytes()[:4] == b"\x89PNG"
    assert [Path(path).name for path in files] == [
        "structures.zip", "tRNA-Phe.ct", "tRNA-Phe.bpseq", "tRNA-Phe.dbn", "tRNA-Phe.npy"
    ]  # fmt: skip
    assert "tRNA-Phe" in report and "hairpin" in report
    heat_map, arcs, files = client.predict(
        "hairpin", api_name="/show_structure"
    )  # the session keeps the result
    assert [Path(path).name for path in files][1:] == [
        "hairpin.ct",
        "hairpin.bpseq",
        "hairpin.dbn",
        "hairpin.npy",
    ]
    assert SecondaryStructure.read(files[1]).to_dot_bracket() == expected
    assert Path(heat_map).read_bytes()[:4] == b"\x89PNG"


def test_long_jobs_report_progress(client, server, monkeypatch):
    """The page's progress bar: Gradio tracks fold's tqdm bar, and the client sees it in the job's status."""
    postprocess = server.fold_pipeline.postprocess

    def slow_postprocess(*args, **kwargs):
        time.sleep(0.4)
        return postprocess(*args, **kwargs)

    monkeypatch.setattr(server.fold_pipeline, "postprocess", slow_postprocess)
    four = "".join(f">s{number}\n{HAIRPIN}\n" for number in range(4))
    job = client.submit(four, None, False, 0.34, False, api_name="/fold")
    seen = set()
    while not job.done():
        seen |= {(unit.desc, unit.index, unit.length) for unit in job.status().progress_data or []}
        time.sleep(0.05)
    assert job.result(timeout=60)[0].count(">s") == 4
    steps = {index for desc, index, length in seen if desc == "Folding" and length == 4}
    assert len(steps) >= 2, seen  # several updates on the way, not just a start


def test_a_long_embedding_job_does_not_hold_up_folding(server, monkeypatch):
    """The actions have their own queues: folding finishes while an embedding job is still running."""
    release = threading.Event()
    embed_now = server.embed
    running, most_at_once, lock = [0], [0], threading.Lock()

    def slow_embed(*args, **kwargs):
        with lock:
            running[0] += 1
            most_at_once[0] = max(most_at_once[0], running[0])
        release.wait(timeout=60)
        try:
            return embed_now(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(server, "embed", slow_embed)
    app = launch(
        build_app(server), server.limits, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True
    )
    try:
        client = Client(app.local_url, verbose=False)
        embedding = client.submit(HAIRPIN, None, 2, "mean", False, api_name="/embed")
        waiting = client.submit(
            HAIRPIN, None, 2, "mean", False, api_name="/embed"
        )  # same queue: waits its turn
        folded = client.submit(HAIRPIN, None, False, 0.34, False, api_name="/fold").result(timeout=60)
        assert HAIRPIN in folded[0]
        assert not embedding.done() and not waiting.done()
        release.set()
        assert embedding.result(timeout=60)[0] and waiting.result(timeout=60)[0]
        assert most_at_once[0] == 1  # the concurrency limit: one embedding at a time
    finally:
        release.set()
        app.close()


def test_npz_names_are_safe_file_names_and_the_index_maps_the_ids(client, rna_folder):
    fasta = f">../../x\n{HAIRPIN}\n>index\nACGU\n>hairpin\nGGCC\n"
    path, report = client.predict(fasta, None, 2, "mean", False, api_name="/embed")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert names == ["_.._x.npy", "index_2.npy", "hairpin.npy", "index.npy"]
    with np.load(path) as arrays:
        assert arrays["index"].tolist() == [
            ["../../x", "_.._x"],
            ["index", "index_2"],
            ["hairpin", "hairpin"],
        ]
    expected = dict(
        embed(parse_pasted(fasta), rna_folder, layers=2, pooling="mean", progress=False, log=None)
    )
    arrays = read_npz(path)
    assert list(arrays) == ["../../x", "index", "hairpin"]
    for identifier, array in expected.items():
        np.testing.assert_array_equal(arrays[identifier], array)
    assert "Stored under safe file names: '../../x' as '_.._x', 'index' as 'index_2'." in report


def test_ids_are_escaped_in_the_messages_the_page_shows(client):
    """Gradio shows an error's message as HTML: an id holding markup comes back escaped, as text."""
    with pytest.raises(AppError) as refused:
        client.predict(
            ">a\nACGU\n><img/src=x/onerror=alert(1)>\nACXGU\n", None, 2, "none", False, api_name="/embed"
        )
    message = str(refused.value)
    assert "record 2 ('&lt;img/src=x/onerror=alert(1)&gt;'): letters outside" in message
    assert "<img" not in message


def test_a_fold_request_over_the_cost_bound_is_refused_before_any_compute(client, server, monkeypatch):
    def no_folding(*args, **kwargs):
        raise AssertionError("folded a request over the cost bound")

    monkeypatch.setattr("rnafm_hf.folding.fold_fasta", no_folding)
    monkeypatch.setattr(server, "limits", dataclasses.replace(LIMITS, max_fold_cost=8_000))
    with pytest.raises(
        AppError, match=r"costs 8,912 nt² .*; this server folds at most 8,000 nt² per request"
    ):
        client.predict(TWO, None, False, 0.34, False, api_name="/fold")  # 76² + 56²
    monkeypatch.setattr(server, "limits", ServerLimits())
    longest = "ACGU" * 255 + "AC"  # 1,022 nt: the longest the model folds
    assert ServerLimits().max_fold_cost >= len(longest) ** 2  # one of them alone is allowed
    with pytest.raises(RequestError, match=r"costs 19,845,196 nt² .* at most 1,100,000 nt² per request"):
        server.fold([(f"s{number}", longest) for number in range(19)])


def send_and_read_status(url: str, head: bytes, body: bytes) -> bytes:
    """Send a request's head and the start of its body, then read the status line while the rest is unsent."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head + body)
        return connection.makefile("rb").readline()


def test_a_request_body_over_the_limit_is_refused_before_it_is_read(client, server):
    """413 from the HTTP layer, before the server holds the body: a declared length over the limit is refused
    with the body still unsent, and a chunked body as soon as it passes the limit."""
    limit = server.limits.max_request_bytes
    assert limit == 2 * LIMITS.max_upload_bytes + 2**16
    start = b'{"data": ["' + b"A" * 60_000
    head = (
        b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 60000000\r\n\r\n"
    )
    assert send_and_read_status(client.src, head, start).startswith(b"HTTP/1.1 413")
    chunked = head.replace(b"Content-Length: 60000000", b"Transfer-Encoding: chunked")
    chunk = b"A" * 16_384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(limit // len(chunk) + 1))
    refused = send_and_read_status(client.src, chunked, chunks)  # the final, empty chunk is never sent
    assert refused.startswith(b"HTTP/1.1 413")


# ---- one command, and the Space ------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_command_starts_the_app(rna_folder, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "rnafm_hf", "serve", "--model", str(rna_folder), "--port", str(port)]
    environment = os.environ | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
    )
    try:
        url = wait_for_url(process)
        assert url.startswith("http://127.0.0.1:")
        client = Client(url, verbose=False)
        path, _ = client.predict("ACGUACGU", None, 2, "mean", False, api_name="/embed")
        assert read_npz(path)["sequence_1"].shape == (32,)
        assert "/fold" not in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_url(process: subprocess.Popen, timeout: float = 120) -> str:
    """Gradio's "Running on local URL:  http://..." line, read from the server's output."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if "Running on local URL:" in line:
            return line.split("URL:", 1)[1].strip()
    raise AssertionError("The server did not start:\n" + "".join(seen))


def test_serve_without_gradio_says_how_to_install(rna_folder, monkeypatch, capsys):
    from rnafm_hf.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)
    monkeypatch.delitem(sys.modules, "rnafm_hf.webapp", raising=False)
    assert main(["serve", "--model", str(rna_folder)]) == 1
    assert "pip install 'rnafm-hf[serve]'" in capsys.readouterr().err


def test_serve_names_a_missing_structure_folder(rna_folder, tmp_path, capsys):
    from rnafm_hf.cli import main

    assert main(["serve", "--model", str(rna_folder), "--ss-model", str(tmp_path / "rna-fm-ss")]) == 1
    error = capsys.readouterr().err
    assert (
        f"No such folder: '{tmp_path / 'rna-fm-ss'}'. Convert RNA-FM-ResNet_PDB-All.pth into it first"
        in error
    )


def test_space_app_builds_from_its_variables(rna_folder, ss_folder, monkeypatch):
    monkeypatch.setenv("RNAFM_MODEL", str(rna_folder))
    monkeypatch.setenv("RNAFM_SS_MODEL", str(ss_folder))
    monkeypatch.setenv("RNAFM_MAX_SEQUENCES", "7")
    space = runpy.run_path(str(Path(__file__).resolve().parents[1] / "app.py"), run_name="space")
    assert isinstance(space["demo"], gr.Blocks)
    assert space["server"].limits.max_sequences == 7 and space["server"].fold_pipeline is not None


# ---- a real browser ------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.slow
def test_a_browser_submits_a_sequence_and_gets_the_structure_and_the_download(client, server, tmp_path):
    """Headless Chromium (Debian's, driven by Playwright): paste, predict, see the dot-bracket and the pictures,
    download the .ct file. `RNAFM_SCREENSHOT=path.png` also saves the page (the README's picture)."""
    if os.environ.get("CI"):
        assert CHROMIUM, "CI must run the browser test: .ci/run installs Debian's chromium"
    elif CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright import sync_api as playwright  # a test dependency

    expected = server.fold_pipeline(HAIRPIN)["dot_bracket"]
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500}, accept_downloads=True)
            page.goto(client.src, wait_until="domcontentloaded")
            page.locator("#sequences textarea").fill(f">hairpin\n{HAIRPIN}\n")
            page.get_by_role("tab", name="Secondary structure").click()
            page.locator("#fold-button").click()
            dot_bracket = page.locator("#dot-bracket textarea")
            playwright.expect(dot_bracket).to_have_value(f">hairpin\n{HAIRPIN}\n{expected}\n", timeout=60_000)
            playwright.expect(page.locator("#heat-map img")).to_be_visible()
            playwright.expect(page.locator("#arc-diagram img")).to_be_visible()
            with page.expect_download() as download:
                page.locator('#structure-files a[download="hairpin.ct"]').click()
            saved = tmp_path / "downloaded.ct"
            download.value.save_as(saved)
            assert SecondaryStructure.read(saved).to_dot_bracket() == expected
            if screenshot := os.environ.get("RNAFM_SCREENSHOT"):
                page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
