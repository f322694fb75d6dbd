"""Embedding at scale: the feature-extraction pipeline, `rnafm_hf.embed`, `rnafm-hf embed` folders, long sequences."""

import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import DATA
from hypothesis import given
from hypothesis import strategies as st
from original_checkpoints import randomise_, write_original_checkpoint
from safetensors import safe_open
from transformers import pipeline

import rnafm_hf
from rnafm_hf import (
    InvalidSequencesError,
    RnaFmCodonTokenizer,
    RnaFmConfig,
    RnaFmModel,
    RnaFmTokenizer,
    embed,
    embed_to_folder,
    load_embeddings,
    load_original_checkpoint,
)
from rnafm_hf.cli import main
from rnafm_hf.embedding import Embedder, plan_windows

SEQUENCES = {
    "hairpin": "GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU",
    "short": "ACGUN",
    "loop": "GCGCAAAAGCGC",
    "mixed-case": "acgtacgtacgtACGUAGCUAGCUAGCUAGCAUCGAUCGAUCGAUCAGCUAGCUAGCUAGCUAGCAUCGAU",
}


def random_rna(generator: random.Random, length: int) -> str:
    return "".join(generator.choice("ACGU") for _ in range(length))


def model_rows(model, tokenizer, sequence: str, layer: int = -1) -> np.ndarray:
    """Rows of `model(...)` for one sequence alone, `<cls>` and `<eos>` dropped: the reference."""
    batch = tokenizer([sequence], return_tensors="pt")
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
    return states[layer][0, 1:-1].numpy()


@pytest.fixture(scope="module")
def rna_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rna-fm")
    checkpoint = write_original_checkpoint(folder.parent / "rna.pth", seed=3)
    load_original_checkpoint(checkpoint).save_pretrained(folder)
    RnaFmTokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mrna_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mrna-fm")
    checkpoint = write_original_checkpoint(
        folder.parent / "mrna.pth", theme="rna-3mer", emb_layer_norm_before=False, seed=4
    )
    load_original_checkpoint(checkpoint).save_pretrained(folder)
    RnaFmCodonTokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rna_model(rna_folder):
    return RnaFmModel.from_pretrained(rna_folder).eval()


@pytest.fixture(scope="module")
def short_model():
    """A model that reads at most 62 nt, so that windows are cheap to test."""
    config = RnaFmConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=66,
    )
    model = RnaFmModel(config).eval()
    randomise_(model, seed=5)
    return model


def quiet(**options):
    return {"progress": False, "log": None, **options}


# ---- the feature-extraction pipeline -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rna", "mrna"])
def test_feature_extraction_pipeline_gives_the_model_rows(kind, rna_folder, mrna_folder):
    folder = rna_folder if kind == "rna" else mrna_folder
    sequences = (
        [SEQUENCES["hairpin"], SEQUENCES["loop"]]
        if kind == "rna"
        else ["AUGGCCAAGUAA", "AUGAAACCCGGGUUUUAG" * 3]
    )
    model = RnaFmModel.from_pretrained(folder).eval()
    tokenizer = rnafm_hf.RnaFmTokenizer if kind == "rna" else rnafm_hf.RnaFmCodonTokenizer
    extractor = pipeline("feature-extraction", model=str(folder))
    assert isinstance(extractor.tokenizer, tokenizer)
    outputs = extractor(sequences, batch_size=2)  # batched: shorter sequences come back padded
    for sequence, output in zip(sequences, outputs, strict=True):
        tokens = len(sequence) // (1 if kind == "rna" else 3)
        rows = np.array(output[0])[1 : 1 + tokens]  # the README's rule: drop <cls>, <eos> and padding
        np.testing.assert_allclose(rows, model_rows(model, extractor.tokenizer, sequence), atol=1e-5)


# ---- rnafm_hf.embed ----------------------------------------------------------------------------------------------


def test_per_token_output_equals_model_rows_without_specials(rna_folder, rna_model):
    tokenizer = RnaFmTokenizer()
    vectors = dict(embed(SEQUENCES, rna_folder, layers=[-1, 0, 1], **quiet()))
    assert set(vectors) == set(SEQUENCES)
    for name, sequence in SEQUENCES.items():
        assert vectors[name].shape == (3, len(sequence), 32)
        assert vectors[name].dtype == np.float32
        for axis, layer in enumerate((-1, 0, 1)):
            np.testing.assert_allclose(
                vectors[name][axis], model_rows(rna_model, tokenizer, sequence, layer), atol=1e-5
            )
    single = dict(embed(SEQUENCES, rna_folder, **quiet()))
    np.testing.assert_array_equal(single["hairpin"], vectors["hairpin"][0])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooled_vectors_do_not_depend_on_batch_composition(pooling, rna_model, monkeypatch):
    tokenizer = RnaFmTokenizer()
    generator = random.Random(0)
    others = {f"other{n}": random_rna(generator, generator.randint(5, 200)) for n in range(12)}
    target = SEQUENCES["hairpin"]
    batches_with_target = []
    forward = Embedder.forward

    def spy(self, texts):
        if target in texts:
            batches_with_target.append(list(texts))
        return forward(self, texts)

    monkeypatch.setattr(Embedder, "forward", spy)
    alone = dict(embed({"target": target}, rna_model, tokenizer=tokenizer, pooling=pooling, **quiet()))
    rows = model_rows(rna_model, tokenizer, target, layer=-1)
    batch = tokenizer([target], return_tensors="pt")
    with torch.no_grad():
        cls_row = rna_model(**batch).last_hidden_state[0, 0].numpy()
    np.testing.assert_allclose(alone["target"], rows.mean(0) if pooling == "mean" else cls_row, atol=1e-5)
    # Alone in its batch, with a few neighbours, and packed with all the others.
    for batch_tokens in (64, 1024, 100_000):
        batches_with_target.clear()
        mixed = dict(
            embed(
                {**others, "target": target},
                rna_model,
                tokenizer=tokenizer,
                pooling=pooling,
                batch_tokens=batch_tokens,
                **quiet(),
            )
        )
        assert mixed["target"].shape == (32,)
        np.testing.assert_allclose(mixed["target"], alone["target"], atol=1e-5)
    (last,) = batches_with_target
    assert len(last) == 13 and max(map(len, last)) > len(target)  # packed with longer sequences


def test_batches_respect_the_token_budget_and_sort_by_length(short_model):
    embedder = Embedder(short_model, RnaFmTokenizer(), rnafm_hf.embedding.EmbeddingSettings())
    generator = random.Random(1)
    records = [
        rnafm_hf.embedding.SequenceRecord(str(n), random_rna(generator, generator.randint(1, 62)), n + 1)
        for n in range(200)
    ]
    pieces = embedder.pieces_of(records)
    batches = list(embedder.batches_of(pieces, 256))
    assert sum(len(batch) for batch in batches) == len(records)
    widths = [len(piece.text) + 2 for batch in batches for piece in batch]
    assert widths == sorted(widths)
    for batch, following in zip(batches, batches[1:] + [[]], strict=True):
        tokens = sum(len(piece.text) + 2 for piece in batch)
        assert len(batch) == 1 or tokens <= 256
        # A batch closes only when the next piece would not fit.
        assert not following or tokens + len(following[0].text) + 2 > 256


def test_half_precision_on_cpu_is_bfloat16_only(rna_model):
    bf16 = dict(
        embed({"a": SEQUENCES["hairpin"]}, rna_model, tokenizer=RnaFmTokenizer(), dtype="bfloat16", **quiet())
    )
    full = dict(embed({"a": SEQUENCES["hairpin"]}, rna_model, tokenizer=RnaFmTokenizer(), **quiet()))
    assert bf16["a"].dtype == np.float32
    assert 0 < np.abs(bf16["a"] - full["a"]).max() < 0.5
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        list(embed(["ACGU"], rna_model, tokenizer=RnaFmTokenizer(), dtype="float16", device="cpu", **quiet()))


# ---- long sequences ----------------------------------------------------------------------------------------------


@given(
    length=st.integers(1, 3000),
    size=st.integers(1, 1022),
    stride_fraction=st.floats(0.01, 1.0),
)
def test_windows_cover_every_position_as_documented(length, size, stride_fraction):
    stride = max(1, int(size * stride_fraction))
    windows = plan_windows(length, size, stride)
    if length <= size:
        assert windows == [(0, length)]
        return
    assert windows[0][0] == 0 and windows[-1][1] == length
    assert all(end - start == size for start, end in windows)
    starts = [start for start, _ in windows]
    assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:], strict=False))
    assert len(windows) == -(-(length - size) // stride) + 1
    coverage = np.zeros(length, dtype=int)
    for start, end in windows:
        coverage[start:end] += 1
    assert coverage.min() >= 1 and coverage.max() <= -(-size // stride) + 1  # + the end-aligned window


def test_short_sequences_are_the_same_with_windowing(short_model):
    tokenizer = RnaFmTokenizer()
    sequences = {"a": SEQUENCES["hairpin"], "b": SEQUENCES["loop"]}
    plain = dict(embed(sequences, short_model, tokenizer=tokenizer, **quiet()))
    windowed = dict(
        embed(sequences, short_model, tokenizer=tokenizer, long="window", window_size=20, **quiet())
    )
    assert set(windowed) == set(plain)
    for name in sequences:  # within what the model reads: windowing does not touch them
        np.testing.assert_array_equal(windowed[name], plain[name])
    with_long = {**sequences, "long": random_rna(random.Random(9), 100)}
    mixed = dict(embed(with_long, short_model, tokenizer=tokenizer, long="window", window_size=20, **quiet()))
    assert mixed["long"].shape == (100, 32)
    for name in sequences:  # nor does a windowed neighbour
        np.testing.assert_array_equal(mixed[name], plain[name])


@pytest.mark.parametrize("merge", ["mean", "center"])
def test_long_sequence_windows_are_stitched_as_documented(merge, short_model):
    tokenizer = RnaFmTokenizer()
    sequence = random_rna(random.Random(2), 300)
    size, stride = 62, 25
    result = dict(
        embed(
            {"long": sequence},
            short_model,
            tokenizer=tokenizer,
            long="window",
            window_size=size,
            window_stride=stride,
            merge=merge,
            **quiet(),
        )
    )["long"]
    assert result.shape == (300, 32)
    windows = plan_windows(300, size, stride)
    per_window = [model_rows(short_model, tokenizer, sequence[start:end]) for start, end in windows]
    for position in range(300):
        containing = [k for k, (start, end) in enumerate(windows) if start <= position < end]
        if merge == "mean":
            expected = np.mean([per_window[k][position - windows[k][0]] for k in containing], axis=0)
        else:
            # The window in which the position is farthest from a cut (the sequence's own ends are no cuts).
            def context(k, position=position):
                start, end = windows[k]
                left = position - start if start > 0 else 10**9
                right = end - 1 - position if end < 300 else 10**9
                return min(left, right)

            best = max(containing, key=lambda k: (context(k), -k))
            expected = per_window[best][position - windows[best][0]]
        np.testing.assert_allclose(result[position], expected, atol=1e-5)


def test_truncation_keeps_the_first_tokens_and_says_so(short_model):
    tokenizer = RnaFmTokenizer()
    sequence = random_rna(random.Random(3), 100)
    messages = []
    result = dict(
        embed(
            {"long": sequence},
            short_model,
            tokenizer=tokenizer,
            long="truncate",
            progress=False,
            log=messages.append,
        )
    )
    np.testing.assert_allclose(result["long"], model_rows(short_model, tokenizer, sequence[:62]), atol=1e-5)
    assert any("Truncating long: 100 nt, embedding the first 62 nt" in message for message in messages)


def test_codon_windows_count_codons(mrna_folder):
    model = RnaFmModel.from_pretrained(mrna_folder)
    embedder = Embedder(
        model, RnaFmCodonTokenizer(), rnafm_hf.embedding.EmbeddingSettings(long="window", window_size=300)
    )
    record = rnafm_hf.embedding.SequenceRecord("cds", "AUG" * 1500, 1)
    assert embedder.windows_of(record) == plan_windows(1500, 300, 150)
    assert {len(piece.text) for piece in embedder.pieces_of([record])} == {900}


# ---- bad input ---------------------------------------------------------------------------------------------------


def test_bad_records_are_all_reported_before_any_compute(short_model, monkeypatch):
    def no_compute(*args, **kwargs):
        raise AssertionError("the model ran before the input was checked")

    monkeypatch.setattr(Embedder, "forward", no_compute)
    records = [
        ("good", "ACGU"),
        ("empty", ""),
        ("good", "GGGG"),
        ("protein", "ACGUXLACGQ"),
        ("", "ACGU"),
        ("long", "A" * 100),
    ]
    with pytest.raises(InvalidSequencesError) as error:
        list(embed(records, short_model, tokenizer=RnaFmTokenizer(), **quiet()))
    message = str(error.value)
    assert [(item.number, item.id) for item in error.value.invalid] == [
        (2, "empty"),
        (3, "good"),
        (4, "protein"),
        (5, ""),
        (6, "long"),
    ]
    assert "record 2 ('empty'): empty sequence" in message
    assert "record 3 ('good'): duplicate id (first at record 1)" in message
    assert "'X' at 5, 'L' at 6, 'Q' at 10" in message
    assert "the header has no id" in message
    assert "100 nt, longer than the 62 nt the model reads; use long='truncate' or long='window'" in message
    assert "skip them with skip_invalid=True" in message and "--" not in message  # the API names parameters


def test_skip_invalid_embeds_the_rest_and_lists_what_it_skipped(short_model):
    messages = []
    vectors = dict(
        embed(
            [("a", "ACGU"), ("b", ""), ("a", "GG"), ("c", "GGCC")],
            short_model,
            tokenizer=RnaFmTokenizer(),
            skip_invalid=True,
            progress=False,
            log=messages.append,
        )
    )
    assert sorted(vectors) == ["a", "c"]
    assert vectors["a"].shape == (4, 32)
    assert "Skipping record 2 ('b'): empty sequence" in messages
    assert "Skipping record 3 ('a'): duplicate id (first at record 1)" in messages


def test_codon_input_needs_whole_codons(mrna_folder):
    with pytest.raises(InvalidSequencesError, match=r"record 1 \('cds'\): length 10 is not a multiple of 3"):
        list(embed({"cds": "AUGGCCAAGU"}, mrna_folder, **quiet()))
    with pytest.raises(InvalidSequencesError, match=r"'N' at 4 \(codon 2\)"):
        list(embed({"cds": "AUGNCC"}, mrna_folder, **quiet()))


def test_clear_errors_for_inputs_that_are_not_sequences(tmp_path, short_model, capsys):
    with pytest.raises(FileNotFoundError, match=r"pass a list: \['ACGU...'\]"):
        list(embed("ACGUACGU", short_model, tokenizer=RnaFmTokenizer(), **quiet()))
    broken = tmp_path / "broken.fasta"
    broken.write_text("ACGU\n>x\nAC\n")
    assert main(["embed", str(broken), "--model", str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    assert "line 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Layer 5 does not exist"):
        list(embed(["ACGU"], short_model, tokenizer=RnaFmTokenizer(), layers=[5], **quiet()))
    with pytest.raises(ValueError, match="window stride must be between 1 and the window size"):
        list(
            embed(
                ["ACGU"], short_model, tokenizer=RnaFmTokenizer(), long="window", window_stride=80, **quiet()
            )
        )


# ---- output folders ----------------------------------------------------------------------------------------------


def write_fasta(path, records) -> None:
    path.write_text("".join(f">{name} description\n{sequence}\n" for name, sequence in records))


def test_npy_folder_holds_one_array_per_sequence_in_the_original_layout(tmp_path, rna_folder):
    fasta = tmp_path / "input.fasta"
    write_fasta(fasta, [*SEQUENCES.items(), ("odd/name", "ACGUACGU")])
    assert main(["embed", str(fasta), "--model", str(rna_folder), "-o", str(tmp_path / "out")]) == 0
    expected = dict(embed(fasta, rna_folder, **quiet()))
    files = outputs(tmp_path / "out")
    assert files == sorted(
        ["hairpin.npy", "short.npy", "loop.npy", "mixed-case.npy", "odd_name.npy", "index.tsv", "run.json"]
    )
    for name, vector in expected.items():
        stem = name.replace("/", "_")
        stored = np.load(tmp_path / "out" / f"{stem}.npy")
        assert stored.dtype == np.float32
        np.testing.assert_array_equal(stored, vector)
    store = load_embeddings(tmp_path / "out")
    assert list(store) == [*SEQUENCES, "odd/name"]  # input order
    assert store.info("odd/name") == {"file": "odd_name.npy", "length": 8, "embedded": 8, "windows": 1}
    np.testing.assert_array_equal(store["loop"], expected["loop"])


def outputs(folder) -> list[str]:
    """The files embed wrote, without the folder's bookkeeping (`.rnafm-hf.*`)."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith(".rnafm-hf."))


def test_safetensors_store_shards_and_reads_back(tmp_path, short_model):
    generator = random.Random(4)
    records = {f"seq{n}": random_rna(generator, generator.randint(10, 400)) for n in range(100)}
    result = embed_to_folder(
        records,
        tmp_path / "out",
        short_model,
        tokenizer=RnaFmTokenizer(),
        format="safetensors",
        pooling="none",
        long="window",
        shard_mb=1,
        **quiet(),
    )
    assert result.embedded == 100
    shards = sorted((tmp_path / "out").glob("shard-*.safetensors"))
    assert len(shards) > 1
    store = load_embeddings(tmp_path / "out")
    assert list(store) == list(records)
    expected = dict(embed(records, short_model, tokenizer=RnaFmTokenizer(), long="window", **quiet()))
    for name, sequence in records.items():
        assert store[name].shape == (len(sequence), 32)
        np.testing.assert_array_equal(store[name], expected[name])
        assert store.info(name)["windows"] == len(plan_windows(len(sequence), 62, 31))


def test_other_settings_are_not_mixed_into_an_earlier_run(tmp_path, short_model):
    options = {"tokenizer": RnaFmTokenizer(), **quiet()}
    embed_to_folder({"a": "ACGU"}, tmp_path / "out", short_model, **options)
    with pytest.raises(FileExistsError, match=r"different settings.*--overwrite"):
        embed_to_folder({"a": "ACGU"}, tmp_path / "out", short_model, pooling="mean", **options)
    with pytest.raises(FileExistsError, match="different input_fingerprint"):
        embed_to_folder({"a": "ACGUU"}, tmp_path / "out", short_model, **options)
    with pytest.raises(FileExistsError, match="different settings"):  # other batches, other float sums
        embed_to_folder({"a": "ACGU"}, tmp_path / "out", short_model, batch_tokens=100, **options)
    embed_to_folder({"b": "GG"}, tmp_path / "out", short_model, pooling="mean", overwrite=True, **options)
    assert outputs(tmp_path / "out") == ["b.npy", "index.tsv", "run.json"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not written by rnafm-hf embed"):
        embed_to_folder({"a": "ACGU"}, tmp_path / "mine", short_model, overwrite=True, **options)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_interrupted_folder_cannot_be_read_as_finished(tmp_path, short_model):
    embed_to_folder({"a": "ACGU"}, tmp_path / "out", short_model, tokenizer=RnaFmTokenizer(), **quiet())
    (tmp_path / "out" / "index.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="run again"):
        load_embeddings(tmp_path / "out")


# ---- resume after a kill, and two processes ----------------------------------------------------------------------


def many_sequences(count: int, seed: int) -> list[tuple[str, str]]:
    generator = random.Random(seed)
    return [(f"rna{n}", random_rna(generator, generator.randint(20, 400))) for n in range(count)]


def stored(folder) -> dict[str, np.ndarray]:
    store = load_embeddings(folder)
    return {name: store[name] for name in store}


# One thread, like this process (conftest), so that the subprocesses' sums round exactly as ours.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(fasta, model, output, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rnafm_hf",
        "embed",
        str(fasta),
        "--model",
        str(model),
        "-o",
        str(output),
        *extra,
    ]


@pytest.mark.parametrize("store_format", ["npy", "safetensors"])
@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(store_format, tmp_path, rna_folder):
    fasta = tmp_path / "many.fasta"
    write_fasta(fasta, many_sequences(1500, seed=7))
    extra = ["--format", store_format, "--shard-mb", "1", "--batch-tokens", "512"]
    complete = tmp_path / "complete"
    embed_to_folder(fasta, complete, rna_folder, format=store_format, shard_mb=1, batch_tokens=512, **quiet())

    output = tmp_path / "interrupted"
    pattern = "*.npy" if store_format == "npy" else "shard-*.safetensors"
    process = subprocess.Popen(
        command(fasta, rna_folder, output, *extra), stderr=subprocess.DEVNULL, env=ONE_THREAD
    )
    try:
        while process.poll() is None and len(list(output.glob(pattern))) < 3:
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()
    written = list(output.glob(pattern))
    assert written and not (output / "index.tsv").exists(), "the run should have been killed midway"
    for path in written:  # whatever is under a final name is complete
        if store_format == "npy":
            assert np.load(path).shape[1] == 32
        else:
            with safe_open(path, framework="np") as handle:
                assert all(handle.get_tensor(key).shape[1] == 32 for key in handle.keys())  # noqa: SIM118

    finished = subprocess.run(
        command(fasta, rna_folder, output, *extra), capture_output=True, text=True, env=ONE_THREAD
    )
    assert finished.returncode == 0, finished.stderr
    assert "Resuming:" in finished.stderr and "from an earlier run" in finished.stdout
    assert not list(output.glob(".*.partial"))
    resumed, reference = stored(output), stored(complete)
    assert list(resumed) == list(reference)
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name])


@pytest.mark.slow
def test_two_accelerate_processes_give_the_one_process_result(tmp_path, rna_folder):
    fasta = tmp_path / "input.fasta"
    write_fasta(fasta, many_sequences(120, seed=8))
    single = tmp_path / "single"
    embed_to_folder(fasta, single, rna_folder, format="safetensors", pooling="mean", shard_mb=1, **quiet())
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(29500 + random.Random().randint(1, 2000)),
            "-m",
            "rnafm_hf",
            "embed",
            str(fasta),
            "--model",
            str(rna_folder),
            "-o",
            str(tmp_path / "double"),
            "--format",
            "safetensors",
            "--pooling",
            "mean",
            "--shard-mb",
            "1",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=ONE_THREAD,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 processes share 120 sequences" in launched.stderr
    shards = sorted(path.name for path in (tmp_path / "double").glob("shard-*.safetensors"))
    assert {name[:10] for name in shards} == {"shard-000-", "shard-001-"}  # both processes wrote
    keys = []
    for shard in shards:
        with safe_open(tmp_path / "double" / shard, framework="np") as handle:
            keys.extend(handle.keys())  # noqa: SIM118
    assert sorted(keys) == sorted(f"rna{n}" for n in range(120))  # nothing lost, nothing twice
    one, two = stored(single), stored(tmp_path / "double")
    assert list(two) == list(one)
    for name in one:  # the same batches, computed in another process: the same numbers
        np.testing.assert_array_equal(two[name], one[name])


@pytest.mark.skipif(not (DATA / "RF00005.fasta").exists(), reason="needs ../shared/data (RF00005.fasta)")
def test_real_trna_family_embeds_with_pooling(tmp_path, rna_folder):
    result = embed_to_folder(DATA / "RF00005.fasta", tmp_path / "trna", rna_folder, pooling="mean", **quiet())
    store = load_embeddings(tmp_path / "trna")
    assert result.embedded == len(store) == 954
    assert all(store[name].shape == (32,) for name in list(store)[:20])
    records = rnafm_hf.fasta.read_fasta(DATA / "RF00005.fasta")
    # Packed: the model computed each sequence's tokens (<cls> and <eos> included) and nothing else.
    assert result.statistics.tokens == sum(len(sequence) + 2 for _, sequence in records)


# ---- review follow-ups: codons, tokenizer pairing, precision, devices, edge cases -------------------------------


def test_codon_embeddings_are_per_codon_windowed_and_truncated(mrna_folder):
    model = RnaFmModel.from_pretrained(mrna_folder).eval()
    tokenizer = RnaFmCodonTokenizer()
    sequence = random_rna(random.Random(10), 3 * 1100)
    options = {"tokenizer": tokenizer, **quiet()}
    windowed = dict(
        embed({"cds": sequence}, model, long="window", window_size=500, window_stride=300, **options)
    )["cds"]
    assert windowed.shape == (1100, 32)  # one row per codon
    windows = plan_windows(1100, 500, 300)
    total, count = np.zeros((1100, 32)), np.zeros(1100)
    for start, end in windows:
        total[start:end] += model_rows(model, tokenizer, sequence[3 * start : 3 * end])
        count[start:end] += 1
    np.testing.assert_allclose(windowed, total / count[:, None], atol=1e-5)
    truncated = dict(embed({"cds": sequence}, model, long="truncate", **options))["cds"]
    np.testing.assert_allclose(truncated, model_rows(model, tokenizer, sequence[: 3 * 1022]), atol=1e-5)


def test_the_tokenizer_must_read_what_the_model_reads(mrna_folder):
    model = RnaFmModel.from_pretrained(mrna_folder)
    with pytest.raises(
        ValueError, match="RnaFmTokenizer reads 1 nucleotide.*RnaFmCodonTokenizer for mRNA-FM"
    ):
        list(embed(["AUGGCC"], model, tokenizer=RnaFmTokenizer(), **quiet()))


def test_a_left_padding_tokenizer_gives_the_same_rows(rna_model):
    sequences = {"a": SEQUENCES["hairpin"], "b": SEQUENCES["loop"]}
    right = dict(embed(sequences, rna_model, tokenizer=RnaFmTokenizer(), **quiet()))
    left = dict(embed(sequences, rna_model, tokenizer=RnaFmTokenizer(padding_side="left"), **quiet()))
    for name in sequences:
        np.testing.assert_array_equal(left[name], right[name])


def test_a_half_precision_folder_is_embedded_in_float32(tmp_path, rna_model):
    import copy

    copy.deepcopy(rna_model).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    RnaFmTokenizer().save_pretrained(tmp_path / "bf16")
    model, _ = rnafm_hf.embedding.load_encoder(tmp_path / "bf16", device="cpu")
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}


def test_a_bfloat16_run_from_a_folder_keeps_linear_weights_in_bfloat16_with_the_same_numbers(rna_folder):
    model, _ = rnafm_hf.embedding.load_encoder(rna_folder, device="cpu", compute_dtype=torch.bfloat16)
    linear = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    assert linear and all(module.weight.dtype == torch.bfloat16 for module in linear)
    assert model.embeddings.word_embeddings.weight.dtype == torch.float32
    sequences = {"a": SEQUENCES["hairpin"], "b": SEQUENCES["loop"]}
    from_folder = dict(embed(sequences, rna_folder, dtype="bfloat16", **quiet()))
    autocast_only = RnaFmModel.from_pretrained(rna_folder, hidden_act="gelu")
    reference = dict(embed(sequences, autocast_only, tokenizer=RnaFmTokenizer(), dtype="bfloat16", **quiet()))
    for name in sequences:
        np.testing.assert_array_equal(from_folder[name], reference[name])


def test_each_launched_process_uses_its_own_gpu(monkeypatch):
    class TwoProcesses:
        num_processes = 2
        device = torch.device("cuda", 1)

    monkeypatch.setattr("accelerate.PartialState", lambda **kwargs: TwoProcesses())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rnafm_hf.embedding_store._process_state(None)[1] == "cuda:1"
    assert rnafm_hf.embedding_store._process_state("cpu")[1] == "cpu"
    with pytest.raises(ValueError, match="drop --device"):
        rnafm_hf.embedding_store._process_state("cuda:0")


def test_work_is_dealt_by_tokens_and_never_splits_a_record(short_model):
    embedder = Embedder(short_model, RnaFmTokenizer(), rnafm_hf.embedding.EmbeddingSettings(long="window"))
    generator = random.Random(11)
    records = [
        rnafm_hf.embedding.SequenceRecord(str(n), random_rna(generator, generator.randint(5, 400)), n + 1)
        for n in range(80)
    ]
    units = embedder.work_units(embedder.plan(records, 300))
    shares = rnafm_hf.embedding_store._dealt(units, 3)
    owner = {}
    for process, share in enumerate(shares):
        for unit in share:
            for batch in unit:
                for piece in batch:
                    assert owner.setdefault(piece.record, process) == process  # all windows in one process
    assert sorted(owner) == list(range(80))

    def cost(unit):
        return sum(len(batch) * (len(batch[-1].text) + 2) for batch in unit)

    loads = [sum(cost(unit) for unit in share) for share in shares]
    assert max(loads) - min(loads) <= max(cost(unit) for unit in units)  # greedy: within one unit


def test_empty_inputs_and_zero_windows_are_refused(tmp_path, short_model):
    options = {"tokenizer": RnaFmTokenizer(), **quiet()}
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    with pytest.raises(ValueError, match="holds no sequences"):
        embed_to_folder(empty, tmp_path / "out", short_model, **options)
    with pytest.raises(InvalidSequencesError, match="empty sequence"):
        list(embed([("a", "")], short_model, skip_invalid=True, **options))
    with pytest.raises(ValueError, match="window_size must be between 1 and 62"):
        list(embed(["ACGU"], short_model, long="window", window_size=0, **options))
    with pytest.raises(ValueError, match="batch_tokens must be positive"):
        embed_to_folder({"a": "ACGU"}, tmp_path / "out", short_model, batch_tokens=0, **options)
    with pytest.raises(
        ValueError, match=r"Input 2 is 5: expected a sequence string or an \(id, sequence\) pair"
    ):
        list(embed(["ACGU", 5], short_model, **options))
    assert not (tmp_path / "out").exists()


def test_cli_layers_and_exact_option_names(tmp_path, rna_folder):
    fasta = tmp_path / "input.fasta"
    write_fasta(fasta, [("hairpin", SEQUENCES["hairpin"])])
    arguments = ["embed", str(fasta), "--model", str(rna_folder), "-o", str(tmp_path / "out")]
    assert main([*arguments, "--layers", "-1,0"]) == 0
    stacked = np.load(tmp_path / "out" / "hairpin.npy")
    assert stacked.shape == (2, 56, 32)
    model = RnaFmModel.from_pretrained(rna_folder).eval()
    np.testing.assert_allclose(
        stacked[1], model_rows(model, RnaFmTokenizer(), SEQUENCES["hairpin"], 0), atol=1e-5
    )
    with pytest.raises(SystemExit):
        main([*arguments, "--layer", "-1"])  # no abbreviations: --layer is not --layers


def test_a_folder_left_by_a_kill_while_starting_is_used(tmp_path, short_model):
    folder = tmp_path / "killed"
    folder.mkdir()
    (folder / ".rnafm-hf.lock").touch()  # all that a run killed while marking the folder as embed's leaves
    (folder / "..rnafm-hf.json.123.partial").write_text("{")
    embed_to_folder({"a": "ACGU"}, folder, short_model, tokenizer=RnaFmTokenizer(), **quiet())
    assert outputs(folder) == ["a.npy", "index.tsv", "run.json"]
    assert not list(folder.glob(".*.partial"))
    with load_embeddings(folder) as store:
        assert "a" in store and "b" not in store
