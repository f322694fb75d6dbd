"""RNA-FM's secondary-structure model against the original head, its training loss, the pipeline and `fold`."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import DATA, read_fasta
from conftest import TINY_STRUCTURE as TINY
from original_checkpoints import SS_HEAD_NAME, original_structure_model, write_secondary_structure_checkpoint
from transformers import AutoTokenizer, Trainer, TrainingArguments, pipeline

import rnafm_hf
from rnafm_hf import InvalidSequencesError, RnaFmConfig, RnaFmForSecondaryStructure, RnaFmTokenizer
from rnafm_hf.cli import main
from rnafm_hf.conversion import convert_checkpoint
from rnafm_hf.fasta import safe_stems
from rnafm_hf.structure import SecondaryStructure, fold_probabilities


def records(name: str, count: int | None = None) -> list[tuple[str, str]]:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data folder (../shared/data) is needed for this test")
    return read_fasta(path)[:count]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_secondary_structure_checkpoint(tmp_path_factory.mktemp("ss") / "RNA-FM-ResNet_PDB-All.pth")


@pytest.fixture(scope="module")
def backbone(checkpoint):
    """The RNA-FM file the structure file was trained on (written beside it, where the converter does not look)."""
    return checkpoint.parent / f"{checkpoint.stem}-backbone" / "RNA-FM_pretrained.pth"


@pytest.fixture(scope="module")
def folder(checkpoint, backbone):
    return convert_checkpoint(
        checkpoint, checkpoint.parent / "rna-fm-ss", backbone=backbone, verify=False
    ).output_dir


def original_probabilities(original, alphabet, name: str, sequence: str) -> torch.Tensor:
    """fm's Baseline on one sequence: backbone, then the ResNet head on the last layer (its own forward needs 12
    layers; the tiny backbone has 2), as `Baseline.forward` does."""
    _, _, ids = alphabet.get_batch_converter()([(name, sequence)])
    backbone = original.backbone
    with torch.no_grad():
        layer = backbone.num_layers
        embedding = backbone(ids, repr_layers=[layer], need_head_weights=True)["representations"][layer]
        head = original.downstream_modules[SS_HEAD_NAME]
        return torch.sigmoid(head(ids, {"embedding": embedding}).float())[0]


def test_converted_folder_reproduces_the_original_head(checkpoint, backbone, folder):
    sequences = records("example.fasta") + records("RF00005.fasta", 3)
    original, alphabet = original_structure_model(checkpoint, backbone)
    model = rnafm_hf.AutoModelForContactPrediction.from_pretrained(folder, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer([s for _, s in sequences], padding=True, return_tensors="pt")
    with torch.no_grad():
        batched = torch.sigmoid(model(**batch).logits)
    for row, (name, sequence) in enumerate(sequences):
        expected = original_probabilities(original, alphabet, name, sequence)
        with torch.no_grad():
            logits = model(**tokenizer(sequence, return_tensors="pt")).logits[0]
        assert torch.equal(logits, logits.T)  # mirrored exactly (the sigmoid's vector kernel may not be)
        alone = torch.sigmoid(logits)
        assert (alone - expected).abs().max() <= 1e-5, name
        # Padding in a batch changes nothing (the original's batched output would).
        assert (batched[row, : len(sequence), : len(sequence)] - expected).abs().max() <= 1e-5, name
        assert 0.001 < (expected > 0.34).float().mean() < 0.2  # a sparse map, like a trained head's


def test_inputs_embeds_and_input_ids_agree():
    """Without input_ids, `<cls>`/`<eos>` are found by place; with them, by id."""
    model = RnaFmForSecondaryStructure(RnaFmConfig(**TINY, token_dropout=True)).eval()
    batch = RnaFmTokenizer()(["GGGAAACCCU", "ACGUA"], padding=True, return_tensors="pt")
    embeds = model.rnafm.embeddings.word_embeddings(batch["input_ids"])
    with torch.no_grad():
        by_ids = model(**batch).logits
        by_embeds = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(by_ids, by_embeds, atol=1e-6)


def test_loss_covers_labelled_residue_pairs_only():
    torch.manual_seed(0)
    model = RnaFmForSecondaryStructure(RnaFmConfig(**TINY)).eval()
    batch = RnaFmTokenizer()(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    labels = torch.randint(0, 2, (2, 9, 9)).float()
    labels[0, 0, :] = -100
    out = model(**batch, labels=labels)
    logits = out.logits
    valid = torch.zeros(2, 9, 9, dtype=torch.bool)
    valid[0, 1:, :] = True
    valid[1, :4, :4] = True
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[valid], labels[valid])
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert model.ss_head.blocks[0].conv1.weight.grad.abs().sum() > 0
    nothing = model(**batch, labels=torch.full((2, 9, 9), -100.0)).loss
    assert nothing.item() == 0.0  # not NaN


def test_trainer_fine_tunes_the_head_on_structures(tmp_path):
    """Known structures (tRNA family, Rfam) as pair labels; the encoder frozen as the original trained it."""
    tokenizer = RnaFmTokenizer()
    model = RnaFmForSecondaryStructure(RnaFmConfig(**TINY))
    model.rnafm.requires_grad_(False)
    trna = "GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA"
    structure = SecondaryStructure.from_dot_bracket(
        trna, "(((((((..((((........)))).(((((.......))))).....(((((.......))))))))))))...."
    )
    examples = []
    for cut in (76, 70, 60, 50):
        labels = torch.zeros(cut, cut)
        for i, j in structure.pairs:
            if j < cut:
                labels[i, j] = labels[j, i] = 1
        examples.append({**tokenizer(trna[:cut]), "labels": labels})

    def collate(items):
        batch = tokenizer.pad(
            [{k: v for k, v in x.items() if k != "labels"} for x in items], return_tensors="pt"
        )
        size = max(len(x["labels"]) for x in items)
        labels = torch.full((len(items), size, size), -100.0)
        for row, item in enumerate(items):
            labels[row, : len(item["labels"]), : len(item["labels"])] = item["labels"]
        return {**batch, "labels": labels}

    before = model.ss_head.output.weight.detach().clone()
    frozen = model.rnafm.encoder.layers[0].fc1.weight.detach().clone()
    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, learning_rate=1e-2,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
    )  # fmt: skip
    Trainer(model=model, args=arguments, train_dataset=examples, data_collator=collate).train()
    assert not torch.equal(model.ss_head.output.weight, before)
    assert torch.equal(model.rnafm.encoder.layers[0].fc1.weight, frozen)


def test_structure_head_trains_from_a_plain_rna_fm_folder(tmp_path):
    from rnafm_hf import RnaFmForMaskedLM

    RnaFmForMaskedLM(RnaFmConfig(**TINY)).save_pretrained(tmp_path / "plain")
    model = RnaFmForSecondaryStructure.from_pretrained(tmp_path / "plain")
    convs = model.ss_head.blocks[0].conv1.weight
    # The original's Kaiming initialisation for a fresh head, not transformers' default N(0, 0.02).
    assert convs.std().item() == pytest.approx((2 / convs[0].numel()) ** 0.5, rel=0.25)


# Pipeline ----------------------------------------------------------------------------------------------------


def test_pipeline_batched_equals_single_and_structures_are_valid(folder):
    sequences = [s for _, s in records("example.fasta") + records("RF00005.fasta", 5)]
    fold = pipeline("rna-secondary-structure", model=str(folder))
    single = [fold(s, return_probabilities=True) for s in sequences]
    batched = fold(sequences, batch_size=4, return_probabilities=True)
    for sequence, one, many in zip(sequences, single, batched, strict=True):
        assert one["sequence"] == sequence.upper().replace("T", "U")
        assert one["dot_bracket"] == many["dot_bracket"] and one["pairs"] == many["pairs"]
        assert one["multiplets"] == many["multiplets"]
        assert np.abs(one["probabilities"] - many["probabilities"]).max() <= 1e-5
        assert np.allclose(one["probabilities"], one["probabilities"].T, rtol=0, atol=1e-7)
        structure = SecondaryStructure.from_dot_bracket(one["sequence"], one["dot_bracket"])
        assert list(structure.pairs) == one["pairs"] and one["pairs"]
        expected = fold_probabilities(one["probabilities"], one["sequence"])
        assert list(expected.structure.pairs) == one["pairs"]
        assert "probabilities" not in fold(sequence)


def test_pipeline_options_and_input_checks(folder):
    fold = pipeline("rna-secondary-structure", model=str(folder))
    sequence = records("example.fasta")[2][1]
    default = fold(sequence)
    assert len(fold(sequence, threshold=0.9)["pairs"]) < len(default["pairs"])
    canonical = fold(sequence, canonical_only=True)
    assert all(
        sequence[i] + sequence[j] in {"AU", "UA", "GC", "CG", "GU", "UG"} for i, j in canonical["pairs"]
    )
    assert fold(sequence.lower().replace("U", "t"))["dot_bracket"] == default["dot_bracket"]
    # embed's input rules (rnafm_hf.records): refused before any compute, with the position.
    with pytest.raises(InvalidSequencesError, match="1100 nt, longer than the 1022 nt the model reads"):
        fold("A" * 1100)
    with pytest.raises(InvalidSequencesError, match="letters outside .*'X' at 5"):
        fold("ACGUXACGU")
    with pytest.raises(InvalidSequencesError, match="empty sequence"):
        fold(" ")
    with pytest.raises(TypeError, match="Unknown option.*treshold"):
        fold(sequence, treshold=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        fold(sequence, threshold=5)
    left = AutoTokenizer.from_pretrained(folder, padding_side="left")
    with pytest.raises(ValueError, match="right-padded"):
        pipeline("rna-secondary-structure", model=str(folder), tokenizer=left)


def test_pipeline_refuses_a_model_without_the_structure_head(tmp_path):
    from rnafm_hf import RnaFmForMaskedLM

    RnaFmForMaskedLM(RnaFmConfig(**TINY)).save_pretrained(tmp_path / "plain")
    RnaFmTokenizer().save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="needs RNA-FM's secondary-structure model.*rnafm-hf convert"):
        pipeline("rna-secondary-structure", model=str(tmp_path / "plain"))


# CLI ---------------------------------------------------------------------------------------------------------


def test_fold_command_on_example_fasta(folder, tmp_path, capsys):
    fasta = DATA / "example.fasta"
    if not fasta.exists():
        pytest.skip(f"{fasta} is absent")
    out = tmp_path / "structures"
    assert main(["fold", str(fasta), "--model", str(folder), "--output", str(out), "--plot"]) == 0
    printed = capsys.readouterr()
    assert "Folded 3 of 3 sequences" in printed.out and "Folding" in printed.err  # summary, progress bar
    fold = pipeline("rna-secondary-structure", model=str(folder))
    for name, sequence in read_fasta(fasta):
        expected = fold(sequence)
        for suffix in (".ct", ".bpseq", ".dbn"):
            structure = SecondaryStructure.read(out / f"{name}{suffix}")
            assert list(structure.pairs) == expected["pairs"] and structure.sequence == sequence
        probabilities = np.load(out / f"{name}.npy")
        assert probabilities.shape == (len(sequence), len(sequence)) and probabilities.dtype == np.float32
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"{name}  " in printed.out
    summary = (out / "summary.tsv").read_text().splitlines()
    assert summary[0].startswith("id\tfile\tlength") and len(summary) == 4


def test_fold_skips_what_it_cannot_read_and_finishes_the_rest(folder, tmp_path, capsys):
    fasta = tmp_path / "mixed.fasta"
    fasta.write_text(
        ">too/long|id\n" + "ACGU" * 300 + "\n>../hairpin one\nGGGGAAACCCC\n>empty\n\n>with_N\nGGGNAXACCC\n"
    )
    out = tmp_path / "out"
    # Without --skip-invalid the run stops before any compute, listing all three.
    assert main(["fold", str(fasta), "--model", str(folder), "-o", str(out), "--formats", "dbn,ct"]) == 1
    err = capsys.readouterr().err
    assert "3 input record(s) cannot be folded" in err and not out.exists()
    command = ["fold", str(fasta), "--model", str(folder), "-o", str(out), "--skip-invalid"]
    code = main([*command, "--formats", "dbn,ct"])
    printed = capsys.readouterr()
    assert code == 0
    assert (
        "Skipping record 1 ('too/long|id'): 1200 nt, longer than the 1022 nt the model reads" in printed.err
    )
    assert "Skipping record 3 ('empty'): empty sequence" in printed.err
    assert "Skipping record 4 ('with_N'): letters outside the model's alphabet" in printed.err
    assert "'X' at 6" in printed.err
    assert "Folded 1 of 4 sequences" in printed.out and "skipped: 1200 nt" in printed.out
    assert outputs(out) == ["_hairpin.ct", "_hairpin.dbn", "summary.tsv"]
    # Other settings are not mixed into an earlier run without --overwrite; with it, the earlier run's files go.
    assert main([*command, "--formats", "bpseq"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*command, "--formats", "bpseq", "--overwrite"]) == 0
    assert outputs(out) == ["_hairpin.bpseq", "summary.tsv"]
    assert "\ntoo/long|id\t\t1200\t" in (out / "summary.tsv").read_text()  # a skipped row names no file
    (out / "mine.txt").write_text("keep")
    (out / ".rnafm-hf.json").unlink()  # no longer marked as fold's
    assert main([*command, "--overwrite"]) == 1
    assert "not written by rnafm-hf fold" in capsys.readouterr().err and (out / "mine.txt").exists()
    assert main(["fold", str(fasta), "-o", str(tmp_path / "y")]) == 1
    # No folder rna-fm-ss here: the released model, whose download HF_HUB_OFFLINE=1 forbids.
    error = capsys.readouterr().err
    assert "Could not get the released RNA-FM-ResNet_PDB-All.pth from the Hub repo cuhkaih/rnafm" in error
    assert "rnafm-hf convert RNA-FM-ResNet_PDB-All.pth --output FOLDER" in error
    assert (
        main(["fold", str(fasta), "--model", str(folder), "-o", str(tmp_path / "x"), "--formats", "pdf"]) == 1
    )
    assert "choose from ct,bpseq,dbn,npy" in capsys.readouterr().err


def outputs(folder) -> list[str]:
    """The files fold wrote, without the folder's bookkeeping (`.rnafm-hf.*`)."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith(".rnafm-hf."))


def test_fold_plot_without_matplotlib_says_how_to_install(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    fasta = tmp_path / "one.fasta"
    fasta.write_text(">a\nGGGGAAACCCC\n")
    assert main(["fold", str(fasta), "--model", str(folder), "-o", str(tmp_path / "out"), "--plot"]) == 1
    assert "pip install 'rnafm-hf[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_safe_file_names_from_fasta_ids():
    ids = ["3ktw_C", "../../etc/passwd", "a b|c", "A B|C", "", ".hidden", "x" * 300]
    assert safe_stems(ids) == [
        "3ktw_C",
        "_.._etc_passwd",
        "a_b_c",
        "A_B_C_2",
        "sequence_5",
        "hidden",
        "x" * 100,
    ]


@pytest.mark.slow
def test_long_rnas_fold_by_windows_with_the_head_in_tiles(tmp_path):
    """Tiles give the whole-map logits (each with its halo); a sequence within the limit folds the same with
    --long window; a 2,500-nt sequence folds, its map symmetric and finite, within a stated memory bound."""
    import subprocess
    from pathlib import Path

    from rnafm_hf.long_folding import long_sequence_logits, receptive_radius, tiled_pair_logits

    torch.manual_seed(0)
    model = RnaFmForSecondaryStructure(RnaFmConfig(**TINY)).eval()
    tokenizer = RnaFmTokenizer()
    sequence = "GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU" * 3
    batch = tokenizer([sequence], return_tensors="pt")
    with torch.no_grad():
        whole = model(**batch).logits[0]
        embeddings = model.rnafm(**batch).last_hidden_state[0, 1:-1]
        # 4 blocks: a plain 3x3 conv each (4 x 1), a dilated one each (1 + 2 + 4 + 1), and the last conv (1).
        assert receptive_radius(model.ss_head) == 13
        # The released head, 32 blocks of dilations 1, 2, 4, ...: 32 + (11 + 22 + 40) + 1 = 106, as documented.
        from rnafm_hf.modeling_rnafm import RnaFmSecondaryStructureHead

        assert receptive_radius(RnaFmSecondaryStructureHead(RnaFmConfig())) == 106
        for tile in (5, 16, 1000):
            torch.testing.assert_close(
                tiled_pair_logits(model.ss_head, embeddings, tile), whole, atol=1e-6, rtol=0
            )
        with pytest.raises(ValueError, match="training mode, where tiles differ from the whole map"):
            tiled_pair_logits(model.ss_head.train(), embeddings, 16)
        model.eval()
    torch.testing.assert_close(long_sequence_logits(model, tokenizer, sequence)[0], whole, atol=1e-6, rtol=0)
    # A model that reads 64 residues folds the 168 in windows of 64, half a window apart (the last ending at the
    # sequence's end), each read alone, each residue averaged over the windows that hold it, then the head over the
    # whole map: that computed here by hand.
    short = RnaFmForSecondaryStructure(RnaFmConfig(**{**TINY, "max_position_embeddings": 68})).eval()
    total, count = torch.zeros(len(sequence), TINY["hidden_size"]), torch.zeros(len(sequence), 1)
    with torch.no_grad():
        for start in [0, 32, 64, 96, len(sequence) - 64]:
            window = tokenizer([sequence[start : start + 64]], return_tensors="pt")
            total[start : start + 64] += short.rnafm(**window).last_hidden_state[0, 1:-1]
            count[start : start + 64] += 1
        expected = short.ss_head((total / count)[None], torch.ones(1, len(sequence), dtype=torch.bool))[0]
    windowed = long_sequence_logits(short, tokenizer, sequence, tile=40)[0]
    torch.testing.assert_close(windowed, expected, atol=1e-5, rtol=0)

    folder = tmp_path / "tiny-ss"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    fasta = tmp_path / "long.fasta"
    generator = torch.Generator().manual_seed(1)
    long = "".join("ACGU"[int(i)] for i in torch.randint(0, 4, (2500,), generator=generator))
    fasta.write_text(f">short\n{sequence}\n>long\n{long}\n")
    script = (
        "import sys\n"
        "from rnafm_hf.cli import main\n"
        f"status = main(['fold', {str(fasta)!r}, '--model', {str(folder)!r}, '-o', {str(tmp_path / 'out')!r}, "
        "'--long', 'window', '--threshold', '0.95', '-q'])\n"
        # VmHWM, this process image's own peak: ru_maxrss keeps the forking parent's peak across exec.
        "print('PEAK', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
        "sys.exit(status)\n"
    )
    root = Path(__file__).resolve().parents[1]  # this checkout's rnafm_hf
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.split("PEAK")[-1]) / 1024
    # The whole (L, L, channels) activations of even this tiny head would take 2500^2 * 8 * 4 bytes = 200 MB each;
    # tiles of 512 (+ 2 x 13 halo) keep the head under 10 MB a tensor. Python, torch and the model: under 1.5 GB.
    assert peak_mb < 1500, f"peak RSS {peak_mb:.0f} MB"
    probabilities = np.load(tmp_path / "out" / "long.npy")
    assert probabilities.shape == (2500, 2500) and np.isfinite(probabilities).all()
    assert np.array_equal(probabilities, probabilities.T)
    short = np.load(tmp_path / "out" / "short.npy")
    assert np.allclose(short, torch.sigmoid(whole).numpy(), atol=1e-6)


def test_structures_deeper_than_dot_bracket_still_fold(folder, tmp_path, monkeypatch, capsys):
    """31 pairs that all cross one another need 31 bracket levels, one more than dot-bracket has: the pipeline
    gives `dot_bracket` None with a warning and every pair, fold writes .ct and .npy, and asking for .dbn names the
    record and the way out."""
    from transformers.testing_utils import CaptureLogger

    import rnafm_hf.pipeline

    sequence = "G" * 31 + "C" * 31
    crossing = [(i, i + 31) for i in range(31)]
    assert len(set(SecondaryStructure(sequence, crossing).pseudoknot_levels().values())) == 31
    real = rnafm_hf.pipeline.fold_probabilities

    def all_crossing(probabilities, sequence, **options):
        wanted = np.zeros_like(probabilities)
        for i, j in crossing:
            wanted[i, j] = wanted[j, i] = 1.0
        return real(wanted, sequence, **options)

    monkeypatch.setattr(rnafm_hf.pipeline, "fold_probabilities", all_crossing)
    with CaptureLogger(rnafm_hf.pipeline.logger) as captured:
        result = pipeline("rna-secondary-structure", model=str(folder))(sequence)
    assert result["dot_bracket"] is None and result["pairs"] == crossing
    assert "more than 30 pseudoknot levels" in captured.out and "'pairs' holds all its pairs" in captured.out
    fasta = tmp_path / "deep.fasta"
    fasta.write_text(f">deep a knot of 31 levels\n{sequence}\n")
    command = ["fold", str(fasta), "--model", str(folder), "-q"]
    assert main([*command, "-o", str(tmp_path / "ct"), "--formats", "ct,npy"]) == 0
    assert SecondaryStructure.read(tmp_path / "ct" / "deep.ct").pairs == tuple(crossing)
    assert main([*command, "-o", str(tmp_path / "dbn"), "--formats", "dbn"]) == 1
    assert (
        "record 'deep': its structure (31 pairs) has more than 30 pseudoknot levels"
        in capsys.readouterr().err
    )
