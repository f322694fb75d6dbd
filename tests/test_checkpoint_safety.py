"""Original files as fairseq training runs save them (optimizer state, numpy numbers) load safely; code never runs."""

from __future__ import annotations

import builtins
import functools
import importlib
import os
import shutil
import subprocess
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import fm
import numpy as np
import pytest
import torch
from original_checkpoints import write_original_checkpoint
from transformers import AutoModelForMaskedLM, AutoTokenizer

import rnafm_hf
from rnafm_hf.cli import main
from rnafm_hf.conversion import convert_checkpoint
from rnafm_hf.original_checkpoint import CheckpointError, load_original_file, read_original_checkpoint
from rnafm_hf.safe_loading import TRAINING_STATE_KEYS, data_only_globals, load_checkpoint_safely

TOLERANCE = 1e-5
SEQUENCES = [
    "GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU",
    "ACGUUUAGCNRY",
    "AUCGGACGUAGC",
]
NUMPY2_MODULE, NUMPY1_MODULE = b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"


class RunsCode:
    """Unpickling it would run a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def adam_state(model: dict[str, torch.Tensor]) -> dict:
    """What `torch.optim.Adam.state_dict()` holds after some steps: two moments per parameter, larger than the
    model itself."""
    params = [tensor for tensor in model.values() if tensor.is_floating_point()]
    generator = torch.Generator().manual_seed(5)
    return {
        "state": {
            i: {
                "step": torch.tensor(1000.0),
                "exp_avg": 1e-3 * torch.randn(p.shape, generator=generator),
                "exp_avg_sq": 1e-6 * torch.rand(p.shape, generator=generator),
            }
            for i, p in enumerate(params)
        },
        "param_groups": [
            {
                "lr": [1e-4],
                "betas": (0.9, 0.98),
                "eps": 1e-6,
                "weight_decay": 0.01,
                "amsgrad": False,
                "params": list(range(len(params))),
            }
        ],
    }


def write_training_checkpoint(
    path: Path,
    *,
    args_extra: dict | None = None,
    extra_state_extra: dict | None = None,
    optimizer_extra: dict | None = None,
    legacy: bool = False,
) -> Path:
    """A tiny RNA-FM file as a fairseq training run saves it: args, model, optimizer_history, extra_state (numpy
    scalars, dtypes, an array, nested containers) and last_optimizer_state (Adam)."""
    checkpoint = torch.load(write_original_checkpoint(path, seed=7), weights_only=False)
    for name, value in (args_extra or {}).items():
        setattr(checkpoint["args"], name, value)
    checkpoint["optimizer_history"] = [
        {
            "criterion_name": "MaskedLmLoss",
            "optimizer_name": "FairseqAdam",
            "lr_scheduler_state": {"best": np.float64(1.2345)},
            "num_updates": 1000,
        }
    ]
    checkpoint["extra_state"] = {
        "train_iterator": {"epoch": 3, "iterations_in_epoch": 0, "shuffle": True},
        "val_loss": np.float64(1.23),
        "best": np.float32(1.1),
        "metrics": {
            "train": [
                (0, "loss", "AverageMeter", {"val": np.float64(2.0), "sum": np.float64(20.0), "count": 10})
            ],
            "default": OrderedDict(wall=np.float32(3.5), ups=np.float16(0.5), steps=np.int64(1000)),
        },
        "previous_training_time": 123.4,
        "dtypes": [np.dtype("float32"), np.dtype("int64"), np.dtype(">f8"), np.dtype(np.bool_)],
        "numbers": [np.int32(7), np.uint8(255), np.bool_(True), np.complex64(1 + 2j), np.longdouble(0.25)],
        "histogram": np.arange(6, dtype=np.int64).reshape(2, 3),
        "seen": {1, 2, 3},
        "note": ("resumed", None, b"bytes"),
        **(extra_state_extra or {}),
    }
    checkpoint["last_optimizer_state"] = adam_state(checkpoint["model"])
    checkpoint["last_optimizer_state"]["state"][0].update(optimizer_extra or {})
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return path


def with_numpy1_names(source: Path, target: Path) -> Path:
    """The same file as written under numpy 1.x, whose pickles name `numpy.core.multiarray.*`: the protocol-2
    GLOBAL opcodes ("module\\nname\\n") rewritten in the archive's data.pkl, every other record copied."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                assert data.count(NUMPY2_MODULE) > 0
                data = data.replace(NUMPY2_MODULE, NUMPY1_MODULE)
            dst.writestr(info.filename, data)
    return target


def fm_reference(path: Path):
    """fm's own loader on the file, which the test trusts: it wrote it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core's deprecation; fm's missing regression weights
        data = torch.load(path, weights_only=False)
        model, alphabet = fm.pretrained.load_model_and_alphabet_core("rna-fm", data, None, "rna")
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(SEQUENCES)])
    with torch.no_grad():
        return tokens, model.eval()(tokens, repr_layers=list(range(model.num_layers + 1)))


def assert_matches_fm(model, tokenizer, path: Path) -> None:
    tokens, expected = fm_reference(path)
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], tokens)
    with torch.no_grad():
        ours = model(**batch, output_hidden_states=True)
    mask = batch["attention_mask"].bool()
    for i, hidden in enumerate(ours.hidden_states):
        assert (hidden - expected["representations"][i]).abs()[mask].max() <= TOLERANCE, f"layer {i}"
    assert (ours.logits - expected["logits"]).abs()[mask].max() <= TOLERANCE


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory) -> Path:
    return write_training_checkpoint(tmp_path_factory.mktemp("fairseq") / "RNA-FM_training.pth")


@pytest.mark.parametrize("numpy_names", ["numpy 2", "numpy 1.x"])
def test_fairseq_training_checkpoint_converts_and_matches_fm(training_checkpoint, tmp_path, numpy_names):
    path = training_checkpoint
    if numpy_names == "numpy 1.x":
        path = with_numpy1_names(path, tmp_path / "RNA-FM_numpy1.pth")
    named = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    new, old = "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"
    assert (old in named, new in named) == ((True, False) if numpy_names == "numpy 1.x" else (False, True))

    loaded = load_original_file(path)
    assert set(loaded) == {"args", "model"}  # the training state is dropped as it is loaded
    model = rnafm_hf.load_original_checkpoint(path)
    assert_matches_fm(model, rnafm_hf.RnaFmTokenizer(), path)

    out = tmp_path / "converted"
    result = convert_checkpoint(
        path, out, verify=True, verify_sequences=[(f"s{i}", s) for i, s in enumerate(SEQUENCES)]
    )
    assert result.kind == "rna-fm" and result.report.passed and result.report.worst <= TOLERANCE
    folder_model = AutoModelForMaskedLM.from_pretrained(out, attn_implementation="eager").eval()
    assert_matches_fm(folder_model, AutoTokenizer.from_pretrained(out), path)


def test_legacy_training_checkpoint_loads(tmp_path):
    """Files written by torch < 1.6 (not zip archives: no memory map, no static listing) load the same way."""
    path = write_training_checkpoint(tmp_path / "RNA-FM_legacy.pth", legacy=True)
    assert not zipfile.is_zipfile(path)
    assert set(load_original_file(path)) == {"args", "model"}
    config, _ = read_original_checkpoint(path)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 32, 4)


def test_training_state_is_memory_mapped_and_dropped(training_checkpoint):
    checkpoint = load_checkpoint_safely(training_checkpoint)
    assert not set(TRAINING_STATE_KEYS) & set(checkpoint)
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the tensors lie in a memory map of the file, not in a copy read into memory
        ranges = [
            [int(address, 16) for address in line.split()[0].split("-")]
            for line in maps.read_text().splitlines()
            if line.endswith(str(training_checkpoint))
        ]
        weight = checkpoint["model"]["encoder.sentence_encoder.embed_tokens.weight"]
        assert any(start <= weight.data_ptr() < end for start, end in ranges)


def test_the_process_wide_allow_list_is_left_as_it_was(training_checkpoint):
    def allowed() -> set:
        return set(torch.serialization.get_safe_globals())

    before = allowed()
    load_checkpoint_safely(training_checkpoint)
    assert allowed() == before  # nothing of ours left behind
    # A caller's own entries, some the same as ours, are still there after the load.
    with torch.serialization.safe_globals([np.dtype, np.float64(0).__reduce__()[0]]):
        theirs = allowed()
        load_checkpoint_safely(training_checkpoint)
        assert allowed() == theirs


def test_allow_list_holds_data_only_objects():
    names = {
        entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
        for entry in data_only_globals()
    }
    dangerous = {"posix.system", "builtins.eval", "builtins.exec", "builtins.getattr", "functools.partial"}
    assert not names & dangerous
    assert {
        "argparse.Namespace",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray._reconstruct",
    } <= names
    assert not any("Object" in name or "Str" in name or "Void" in name for name in names)


WHERE = {
    "args": lambda evil: {"args_extra": {"resume_hook": evil}},
    "extra_state": lambda evil: {"extra_state_extra": {"metrics_hook": [{"deep": evil}]}},
    "last_optimizer_state": lambda evil: {"optimizer_extra": {"exp_avg_hook": evil}},
}


def assert_refused(error: Exception, *names: str) -> None:
    message = str(error)
    assert message.startswith("Refused to load") and message.endswith("Nothing from it was executed.")
    assert "\n" not in message  # one paragraph
    for name in names:
        assert name in message


@pytest.mark.parametrize("where", list(WHERE))
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_code_hidden_anywhere_is_refused_and_never_runs(tmp_path, where, legacy):
    marker = tmp_path / "marker"
    path = write_training_checkpoint(
        tmp_path / "RNA-FM_evil.pth", legacy=legacy, **WHERE[where](RunsCode(marker))
    )
    before = set(torch.serialization.get_safe_globals())
    with pytest.raises(CheckpointError) as caught:
        read_original_checkpoint(path)
    system = f"{os.system.__module__}.system"  # posix.system here, as the pickle names it
    assert_refused(caught.value, system)
    assert not marker.exists()
    assert set(torch.serialization.get_safe_globals()) == before


def test_cli_refuses_code_without_output(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = write_training_checkpoint(
        tmp_path / "RNA-FM_evil.pth", extra_state_extra={"hook": RunsCode(marker)}
    )
    out = tmp_path / "out"
    assert main(["convert", str(path), "--output", str(out)]) != 0
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "Refused to load" in line]
    assert line.startswith("rnafm-hf convert: error: Refused to load")
    assert_refused(line.removeprefix("rnafm-hf convert: error: "), "posix.system")
    assert "\n\n" not in err
    assert not marker.exists()
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


class Reduces:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda marker: Reduces(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (lambda marker: Reduces(builtins.exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
        (lambda marker: Reduces(getattr, marker, "touch"), "builtins.getattr"),
        (lambda marker: Reduces(functools.partial, print, str(marker)), "functools.partial"),
        # pickle's protocol 2 writes subprocess under its Python 2 name.
        (lambda marker: Reduces(subprocess.call, ["touch", str(marker)]), "commands.call"),
        (lambda marker: Reduces(shutil.copyfile, __file__, str(marker)), "shutil.copyfile"),
        (lambda marker: Reduces(importlib.import_module, "this"), "importlib.import_module"),
    ],
    ids=["eval", "exec", "getattr", "partial", "subprocess", "shutil", "import"],
)
def test_other_code_running_globals_are_refused(tmp_path, make, name):
    marker = tmp_path / "marker"
    path = write_training_checkpoint(tmp_path / "RNA-FM_evil.pth", extra_state_extra={"hook": make(marker)})
    with pytest.raises(CheckpointError) as caught:
        load_original_file(path)
    assert_refused(caught.value, name)
    assert not marker.exists()


def test_numpy_object_arrays_are_refused(tmp_path):
    """Only numeric numpy data: an object array (which plain pickle would fill with anything) is refused while
    unpickling, when its dtype is built, with the dtype class named."""
    path = write_training_checkpoint(
        tmp_path / "RNA-FM_objects.pth", extra_state_extra={"objects": np.array([1, "a"], dtype=object)}
    )
    with pytest.raises(CheckpointError) as caught:
        load_original_file(path)
    assert_refused(caught.value, "numpy.dtypes.ObjectDType")


def test_unreadable_files_still_say_so(tmp_path, training_checkpoint):
    data = training_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    html = tmp_path / "page.pth"
    html.write_text("<html><body>404 Not Found</body></html>")
    lfs = tmp_path / "pointer.pth"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1188\n")
    for path in (truncated, html, lfs):
        with pytest.raises(CheckpointError, match="may be truncated .*or not a .pth file"):
            load_original_file(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_original_file(tmp_path / "absent.pth")
