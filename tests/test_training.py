"""Fine-tuning: the task heads, the collators and Trainer recipes for every task level, gradient checkpointing,
gradient accumulation and LoRA. Tiny configs on toy data whose labels a model can learn."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import conftest
import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    pipeline,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from rnafm_hf import (
    AutoModelForContactPrediction,
    DataCollatorForPairLabels,
    RnaFmCodonTokenizer,
    RnaFmConfig,
    RnaFmDataCollatorForLanguageModeling,
    RnaFmForContactPrediction,
    RnaFmForMaskedLM,
    RnaFmForSecondaryStructure,
    RnaFmForSequenceClassification,
    RnaFmForTokenClassification,
    RnaFmTokenizer,
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
PAIRS = {("G", "C"), ("C", "G"), ("A", "U"), ("U", "A"), ("G", "U"), ("U", "G")}


def tiny_config(**overrides) -> RnaFmConfig:
    """The shared tiny configuration with a small structure head and the contact head marked trainable."""
    heads = {"ss_head_reduction": 8, "ss_head_channels": 8, "ss_head_blocks": 2, "contact_head_trained": True}
    return conftest.tiny_config(**{**heads, **overrides})


def no_dropout(**overrides) -> RnaFmConfig:
    return tiny_config(
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, ss_head_dropout=0.0, **overrides
    )


@pytest.fixture(scope="module")
def tokenizer():
    return RnaFmTokenizer()


# ---- toy data: labels a model can learn from the sequence -----------------------------------------------------


def random_sequence(rng: np.random.Generator, length: int, weights=None) -> str:
    return "".join(rng.choice(list("ACGU"), size=length, p=weights))


def biased_sequences(count: int, seed: int = 0) -> list[tuple[str, int]]:
    """Class k: nucleotides drawn with 70% of the k-th of A, C, G."""
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(count):
        label = index % 3
        weights = np.full(4, 0.1)
        weights[label] = 0.7
        examples.append((random_sequence(rng, int(rng.integers(12, 30)), weights), label))
    return examples


def hairpins(count: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Random stems of 4-7 base pairs closed by a loop of 3-6, with their (L, L) pair maps."""
    complement = {"A": "U", "C": "G", "G": "C", "U": "A"}
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        stem = random_sequence(rng, int(rng.integers(4, 8)))
        loop = random_sequence(rng, int(rng.integers(3, 7)))
        sequence = stem + loop + "".join(complement[c] for c in reversed(stem))
        pairs = np.zeros((len(sequence), len(sequence)), dtype=np.int64)
        for i in range(len(stem)):
            j = len(sequence) - 1 - i
            pairs[i, j] = pairs[j, i] = 1
        examples.append((sequence, pairs))
    return examples


def sequence_dataset(tokenizer, problem_type: str, count: int = 96) -> list[dict]:
    rows = []
    for sequence, label in biased_sequences(count):
        gc = sum(c in "GC" for c in sequence) / len(sequence)
        if problem_type == "regression":
            target = gc
        elif problem_type == "multi_label_classification":
            target = [float(label == 0), float(gc > 0.5)]
        else:
            target = label
        rows.append(dict(tokenizer(sequence), labels=target))
    return rows


def token_dataset(tokenizer, count: int = 96) -> list[dict]:
    """One label per nucleotide: 1 on G and C, 0 on A and U; the specials get -100 from `word_ids()`."""
    rows = []
    for sequence, _ in biased_sequences(count, seed=1):
        encoding = tokenizer(sequence)
        per_nucleotide = [int(c in "GC") for c in sequence]
        labels = [-100 if i is None else per_nucleotide[i] for i in encoding.word_ids()]
        rows.append(dict(encoding, labels=labels))
    return rows


def pair_dataset(tokenizer, count: int = 64) -> list[dict]:
    return [dict(tokenizer(sequence), labels=pairs.tolist()) for sequence, pairs in hairpins(count)]


def mlm_dataset(tokenizer, count: int = 96) -> list[dict]:
    """Each sequence 85% one nucleotide: a masked nucleotide is best guessed from the rest of its sequence, which
    takes the loss below ln 4 = 1.39, the best a model blind to the context can do."""
    rng = np.random.default_rng(2)
    rows = []
    for index in range(count):
        weights = np.full(4, 0.05)
        weights[index % 4] = 0.85
        rows.append(dict(tokenizer(random_sequence(rng, int(rng.integers(24, 40)), weights))))
    return rows


# ---- Trainer -------------------------------------------------------------------------------------------------


def train(model, dataset, collator, folder, steps: int = 40, learning_rate: float = 3e-3, **arguments):
    arguments = {"per_device_train_batch_size": 8, **arguments}
    args = TrainingArguments(
        output_dir=str(folder),
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        **arguments,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == steps and all(math.isfinite(loss) for loss in losses)
    return trainer, losses


def start_and_end(losses: list[float], window: int = 5) -> tuple[float, float]:
    return float(np.mean(losses[:window])), float(np.mean(losses[-window:]))


def binary_entropy(p: float) -> float:
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)))


def constant_mlm_loss(rows: list[dict]) -> float:
    """Entropy of the nucleotides: the best masked-LM loss without looking at the context."""
    counts = Counter(i for row in rows for i in row["input_ids"][1:-1])
    p = np.array(list(counts.values())) / sum(counts.values())
    return float(-(p * np.log(p)).sum())


def constant_class_loss(rows: list[dict]) -> float:
    p = np.array(list(Counter(row["labels"] for row in rows).values())) / len(rows)
    return float(-(p * np.log(p)).sum())


def constant_multi_label_loss(rows: list[dict]) -> float:
    return float(np.mean([binary_entropy(p) for p in np.array([row["labels"] for row in rows]).mean(0)]))


def constant_regression_loss(rows: list[dict]) -> float:
    return float(np.var([row["labels"] for row in rows]))


def constant_binary_loss(rows: list[dict]) -> float:
    """For 0/1 labels per token or per pair (-100 left out): the entropy of their positive rate."""
    labels = np.concatenate([np.ravel(row["labels"]) for row in rows])
    return binary_entropy(labels[labels != -100].mean())


class Task(NamedTuple):
    model_class: type
    overrides: dict
    dataset: Callable
    collator: Callable
    # The loss of the best constant prediction (no use of the sequence), which training must clearly beat.
    constant_loss: Callable
    learning_rate: float = 3e-3
    steps: int = 40


TASKS = {
    "masked-lm": Task(
        RnaFmForMaskedLM,
        {},
        mlm_dataset,
        lambda tok: RnaFmDataCollatorForLanguageModeling(tok, seed=0),
        constant_mlm_loss,
        1e-2,
        150,
    ),
    "sequence-single-label": Task(
        RnaFmForSequenceClassification,
        {"num_labels": 3},
        lambda tok: sequence_dataset(tok, "single_label_classification"),
        DataCollatorWithPadding,
        constant_class_loss,
    ),
    "sequence-multi-label": Task(
        RnaFmForSequenceClassification,
        {"num_labels": 2, "problem_type": "multi_label_classification"},
        lambda tok: sequence_dataset(tok, "multi_label_classification"),
        DataCollatorWithPadding,
        constant_multi_label_loss,
    ),
    "sequence-regression": Task(
        RnaFmForSequenceClassification,
        {"num_labels": 1},
        lambda tok: sequence_dataset(tok, "regression"),
        DataCollatorWithPadding,
        constant_regression_loss,
    ),
    "token": Task(
        RnaFmForTokenClassification,
        {"num_labels": 2},
        token_dataset,
        DataCollatorForTokenClassification,
        constant_binary_loss,
    ),
    "contact": Task(
        RnaFmForContactPrediction,
        {},
        pair_dataset,
        DataCollatorForPairLabels,
        constant_binary_loss,
        3e-2,
        150,
    ),
    "secondary-structure": Task(
        RnaFmForSecondaryStructure, {}, pair_dataset, DataCollatorForPairLabels, constant_binary_loss
    ),
}


@pytest.mark.parametrize("task", list(TASKS))
def test_trainer_learns_each_task_and_the_saved_folder_reloads(task, tokenizer, tmp_path):
    model_class, overrides, make_dataset, make_collator, constant_loss, learning_rate, steps = TASKS[task]
    torch.manual_seed(0)
    model = model_class(tiny_config(**overrides))
    dataset = make_dataset(tokenizer)
    trainer, losses = train(
        model,
        dataset,
        make_collator(tokenizer),
        tmp_path / "run",
        learning_rate=learning_rate,
        steps=steps,
    )
    start, end = start_and_end(losses)
    baseline = constant_loss(dataset)
    print(f"{task}: loss {start:.3f} -> {end:.3f}, best constant prediction {baseline:.3f}")
    assert end < start and end < 0.8 * baseline, f"{task}: {start:.3f} -> {end:.3f}, constant {baseline:.3f}"

    trainer.save_model(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    auto_class = {
        RnaFmForMaskedLM: AutoModelForMaskedLM,
        RnaFmForSequenceClassification: AutoModelForSequenceClassification,
        RnaFmForTokenClassification: AutoModelForTokenClassification,
        RnaFmForContactPrediction: AutoModelForContactPrediction,
        RnaFmForSecondaryStructure: AutoModelForContactPrediction,
    }[model_class]
    reloaded = auto_class.from_pretrained(tmp_path / "saved", dtype=torch.float32).eval()
    assert type(reloaded) is model_class
    batch = tokenizer(["GGGAAACCC", "ACGUACGU"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, reloaded(**batch).logits)


@pytest.mark.parametrize("task", list(TASKS))
def test_gradient_checkpointing_gives_the_same_losses_under_trainer(task, tokenizer, tmp_path):
    model_class, overrides, make_dataset, make_collator, *_ = TASKS[task]
    runs = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = model_class(no_dropout(**overrides))
        trainer, losses = train(
            model,
            make_dataset(tokenizer),
            make_collator(tokenizer),
            tmp_path / str(checkpointing),
            steps=6,
            activation_checkpointing=checkpointing,
        )
        assert trainer.model.is_activation_checkpointing == checkpointing
        runs.append(losses)
    assert runs[0] == pytest.approx(runs[1], abs=1e-5)


@pytest.mark.parametrize("task", [name for name in TASKS if name != "secondary-structure"])
def test_gradient_accumulation_equals_the_large_batch(task, tokenizer, tmp_path):
    """One optimizer step over 8 examples of different lengths and label counts, as one batch of 8 or as 4
    accumulated batches of 2, gives the same weights (no clipping, which would hide a scale): every loss is
    scaled by Trainer's count of labels in the whole batch. (The structure head is left out: its BatchNorm
    statistics depend on the batch, as they should.)"""
    model_class, overrides, make_dataset, *_ = TASKS[task]
    if task == "masked-lm":  # a fixed masking with 1 to 4 masked nucleotides per sequence
        dataset = []
        for index, row in enumerate(make_dataset(tokenizer)[:8]):
            labels = [-100] * len(row["input_ids"])
            for position in range(1, 2 + index % 4):
                labels[position] = row["input_ids"][position]
            dataset.append(dict(row, labels=labels))
        collator = DataCollatorForTokenClassification(tokenizer)
    else:
        dataset = make_dataset(tokenizer)[:8]
        collator = TASKS[task].collator(tokenizer)
    assert len({len(row["input_ids"]) for row in dataset}) > 2
    weights = []
    for batch_size, accumulation in ((8, 1), (2, 4)):
        torch.manual_seed(0)
        model = model_class(no_dropout(**overrides))
        train(
            model,
            dataset,
            collator,
            tmp_path / str(batch_size),
            steps=1,
            optim="sgd",
            learning_rate=1.0,
            max_grad_norm=0.0,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
        )
        weights.append(model.rnafm.encoder.layers[0].fc1.weight.detach().clone())
    assert not torch.equal(weights[0], no_dropout_weights(model_class, overrides))  # it did move
    assert torch.allclose(weights[0], weights[1], atol=1e-5), (weights[0] - weights[1]).abs().max()


def no_dropout_weights(model_class, overrides) -> torch.Tensor:
    torch.manual_seed(0)
    return model_class(no_dropout(**overrides)).rnafm.encoder.layers[0].fc1.weight.detach()


# ---- the heads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auto_class", "model_class", "head"),
    [
        (AutoModelForSequenceClassification, RnaFmForSequenceClassification, "classifier."),
        (AutoModelForTokenClassification, RnaFmForTokenClassification, "classifier."),
    ],
)
def test_loading_a_pretrained_backbone_reports_only_the_new_head(saved_folder, auto_class, model_class, head):
    logger = logging.get_logger("transformers.modeling_utils")
    with CaptureLogger(logger) as captured:
        model, info = auto_class.from_pretrained(
            saved_folder, num_labels=3, dtype=torch.float32, output_loading_info=True
        )
    assert type(model) is model_class
    new = {name for name, _ in model.named_parameters() if name.startswith(head)}
    assert set(info["missing_keys"]) == new and new
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert "newly initialized" in captured.out and all(name in captured.out for name in new)
    assert "rnafm." not in captured.out and "lm_head" not in captured.out
    backbone = AutoModel.from_pretrained(saved_folder, dtype=torch.float32)
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(model.rnafm.state_dict()[name], tensor), name
    for name, parameter in model.named_parameters():
        if name.startswith(head):
            assert torch.isfinite(parameter).all()
            if name.endswith("bias"):
                assert not parameter.any()
            else:
                assert 0.005 < parameter.std() < 0.05  # initializer_range 0.02


def test_mean_pooling_ignores_specials_and_padding(tokenizer):
    torch.manual_seed(0)
    model = RnaFmForSequenceClassification(tiny_config(num_labels=2)).eval()
    batch = tokenizer(["GGGAAACCCUUU", "ACGU"], padding=True, return_tensors="pt")
    alone = tokenizer(["ACGU"], return_tensors="pt")
    with torch.no_grad():
        batched = model(**batch).logits[1]
        single = model(**alone).logits[0]
        hidden = model.rnafm(**alone).last_hidden_state[0, 1:-1].mean(0)
        by_hand = model.classifier(hidden)
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(single, by_hand, atol=1e-6)


def test_cls_pooling_takes_the_first_row(tokenizer):
    torch.manual_seed(0)
    model = RnaFmForSequenceClassification(tiny_config(num_labels=2, classifier_pooling="cls")).eval()
    batch = tokenizer(["GGGAAACCCUUU", "ACGU"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        by_hand = model.classifier(model.rnafm(**batch).last_hidden_state[:, 0])
    assert torch.equal(logits, by_hand)
    with pytest.raises(ValueError, match="classifier_pooling must be one of mean, cls"):
        tiny_config(classifier_pooling="max")


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "labels", "loss"),
    [
        ("regression", 1, torch.tensor([0.3, 1.5]), lambda z, y: torch.nn.functional.mse_loss(z[:, 0], y)),
        ("single_label_classification", 3, torch.tensor([2, 0]), torch.nn.functional.cross_entropy),
        (
            "multi_label_classification",
            3,
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),
            torch.nn.functional.binary_cross_entropy_with_logits,
        ),
    ],
)
def test_problem_types_give_their_losses(tokenizer, problem_type, num_labels, labels, loss):
    torch.manual_seed(0)
    model = RnaFmForSequenceClassification(tiny_config(num_labels=num_labels)).eval()
    batch = tokenizer(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert model.config.problem_type == problem_type  # inferred from num_labels and the label dtype
    assert out.loss.item() == pytest.approx(loss(out.logits, labels).item(), abs=1e-6)


def test_token_classification_ignores_specials_and_padding_whatever_their_labels(tokenizer):
    torch.manual_seed(0)
    model = RnaFmForTokenClassification(tiny_config(num_labels=3)).eval()
    batch = tokenizer(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    labels = torch.randint(0, 3, batch["input_ids"].shape)
    residues = torch.zeros_like(labels, dtype=torch.bool)
    residues[0, 1:10] = True
    residues[1, 1:5] = True
    with torch.no_grad():
        out = model(**batch, labels=labels)
        clean = model(**batch, labels=labels.masked_fill(~residues, -100))
    expected = torch.nn.functional.cross_entropy(out.logits[residues], labels[residues])
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert out.loss.item() == pytest.approx(clean.loss.item(), abs=1e-7)


def test_sequence_classifier_works_in_the_text_classification_pipeline(tmp_path, tokenizer):
    torch.manual_seed(0)
    config = tiny_config(num_labels=2, id2label={0: "coding", 1: "non-coding"}, label2id={})
    RnaFmForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path))
    result = classify(["GGGAAACCC", "ACGUACGUACGUAAA"])
    assert [r["label"] in ("coding", "non-coding") for r in result] == [True, True]


# ---- collators ------------------------------------------------------------------------------------------------


def test_mlm_collator_masks_residues_only_and_replaces_with_residues(tokenizer):
    sequences = [seq for seq, _ in biased_sequences(64)]
    collator = RnaFmDataCollatorForLanguageModeling(tokenizer, seed=0)
    special = torch.tensor(tokenizer.all_special_ids)
    canonical = torch.tensor([tokenizer.convert_tokens_to_ids(c) for c in "ACGU"])
    counts = dict.fromkeys(("selected", "masked", "replaced", "kept", "residues"), 0)
    for _ in range(20):
        examples = [tokenizer(s) for s in sequences]
        original = DataCollatorWithPadding(tokenizer)(examples)["input_ids"]
        batch = collator(examples)
        selected = batch["labels"] != -100
        is_special = torch.isin(original, special)
        assert not (selected & is_special).any()  # <cls>, <eos>, <pad> never selected
        assert torch.equal(batch["input_ids"][is_special], original[is_special])
        assert torch.equal(batch["labels"][selected], original[selected])
        assert torch.equal(batch["input_ids"][~selected], original[~selected])
        changed = selected & (batch["input_ids"] != original)
        masked = batch["input_ids"] == tokenizer.mask_token_id
        replaced = changed & ~masked
        assert torch.isin(batch["input_ids"][replaced], canonical).all()  # never <null_*>, <unk>, ...
        counts["selected"] += int(selected.sum())
        counts["masked"] += int(masked.sum())
        counts["replaced"] += int(replaced.sum())
        counts["residues"] += int((~is_special).sum())
    assert counts["selected"] / counts["residues"] == pytest.approx(0.15, abs=0.01)
    assert counts["masked"] / counts["selected"] == pytest.approx(0.8, abs=0.02)
    # a random draw equal to the original looks unchanged: 1/4 of the 10% for nucleotides
    assert counts["replaced"] / counts["selected"] == pytest.approx(0.1 * 3 / 4, abs=0.015)


def test_the_stock_collator_would_draw_null_tokens(tokenizer):
    """Why our collator exists: transformers' draws random replacements from the whole vocabulary."""
    collator = DataCollatorForLanguageModeling(
        tokenizer, mask_replace_prob=0.0, random_replace_prob=1.0, mlm_probability=1.0, seed=0
    )
    batch = collator([tokenizer("A" * 500)])
    nulls = [tokenizer.convert_tokens_to_ids(f"<null_{k}>") for k in range(1, 5)]
    assert torch.isin(batch["input_ids"], torch.tensor(nulls)).any()
    ours = RnaFmDataCollatorForLanguageModeling(
        tokenizer, mask_replace_prob=0.0, random_replace_prob=1.0, mlm_probability=1.0, seed=0
    )
    drawn = ours([tokenizer("A" * 500)])["input_ids"][0, 1:-1]
    assert set(tokenizer.convert_ids_to_tokens(drawn.tolist())) == set("ACGU")


def test_codon_collator_replaces_with_codons():
    codons = RnaFmCodonTokenizer()
    collator = RnaFmDataCollatorForLanguageModeling(codons, seed=0)
    tokens = codons.convert_ids_to_tokens(list(collator.replacement_ids))
    assert len(tokens) == 64 and all(len(t) == 3 and set(t) <= set("ACGU") for t in tokens)


def test_mlm_collator_refuses_special_or_unknown_replacements(tokenizer):
    for ids in ([tokenizer.pad_token_id], [4, 99], []):
        with pytest.raises(ValueError, match="non-special token ids below 25"):
            RnaFmDataCollatorForLanguageModeling(tokenizer, replacement_ids=ids)


def test_pair_collator_pads_labels_with_ignore_and_checks_shapes(tokenizer):
    examples = pair_dataset(tokenizer, count=3)
    batch = DataCollatorForPairLabels(tokenizer)(examples)
    longest = max(len(e["input_ids"]) for e in examples) - 2
    assert batch["labels"].shape == (3, longest, longest)
    for index, example in enumerate(examples):
        n = len(example["input_ids"]) - 2
        assert torch.equal(
            batch["labels"][index, :n, :n], torch.tensor(example["labels"], dtype=torch.float32)
        )
        assert (batch["labels"][index, n:] == -100).all() and (batch["labels"][index, :, n:] == -100).all()
    bad = dict(examples[1], labels=[[0] * 3] * 3)
    with pytest.raises(
        ValueError, match=r"Example 1 of the batch has \d+ residues but labels of shape \(3, 3\)"
    ):
        DataCollatorForPairLabels(tokenizer)([examples[0], bad])
    left = RnaFmTokenizer(padding_side="left")
    with pytest.raises(ValueError, match="right padding"):
        DataCollatorForPairLabels(left)(examples)
    odd = [[0.0] * 9 for _ in range(9)]
    odd[2][6] = 2.0
    with pytest.raises(ValueError, match=r"Example 0 of the batch has the pair label 2.0 at \(2, 6\)"):
        DataCollatorForPairLabels(tokenizer)([dict(tokenizer("GGGAAACCC"), labels=odd)])
    unlabelled = {key: value for key, value in examples[2].items() if key != "labels"}
    with pytest.raises(ValueError, match="Example 2 of the batch has no labels"):
        DataCollatorForPairLabels(tokenizer)([examples[0], examples[1], unlabelled])
    soft = [[0.25] * 9 for _ in range(9)]  # soft labels are kept, not rounded
    assert (
        DataCollatorForPairLabels(tokenizer)([dict(tokenizer("GGGAAACCC"), labels=soft)])["labels"][0, 0, 0]
        == 0.25
    )


def test_pair_labels_on_padding_do_not_change_the_loss(tokenizer):
    torch.manual_seed(0)
    model = RnaFmForSecondaryStructure(no_dropout()).eval()
    batch = DataCollatorForPairLabels(tokenizer)(pair_dataset(tokenizer, count=4))
    noisy = batch["labels"].masked_fill(batch["labels"] == -100, 1)
    with torch.no_grad():
        assert model(**batch).loss.item() == model(**{**batch, "labels": noisy}).loss.item()


# ---- LoRA -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["masked-lm", "sequence-single-label"])
def test_lora_trains_only_the_adapters(task, tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    model_class, overrides, make_dataset, make_collator, *_ = TASKS[task]
    torch.manual_seed(0)
    base = model_class(tiny_config(**overrides))
    frozen = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    task_type = peft.TaskType.SEQ_CLS if task.startswith("sequence") else None
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, task_type=task_type)
    )
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    adapters = [name for name in trainable if "lora_" in name]
    # 2 layers x 4 projections x (A, B); a classification task also trains its new head, as peft does
    assert len(adapters) == 2 * 4 * 2
    assert all(".self_attn." in name for name in adapters)
    head = [name for name in trainable if "lora_" not in name]
    assert all(".classifier." in name for name in head) and bool(head) == (task_type is not None)

    _, losses = train(
        lora,
        make_dataset(tokenizer),
        make_collator(tokenizer),
        tmp_path / "run",
        activation_checkpointing=True,
    )
    start, end = start_and_end(losses)
    # Attention adapters alone, under a frozen random MLM head, move the masked-LM loss only a little in 40 steps;
    # the classification task trains its head too.
    assert end < (0.95 if task_type is None else 0.5) * start, (start, end)
    untouched = base.state_dict()  # the wrapped weights, without the adapters
    for name, tensor in frozen.items():
        if "classifier" not in name:
            key = name.replace("q_proj.", "q_proj.base_layer.").replace("k_proj.", "k_proj.base_layer.")
            key = key.replace("v_proj.", "v_proj.base_layer.").replace("out_proj.", "out_proj.base_layer.")
            assert torch.equal(untouched[key], tensor), name

    merged_folder = tmp_path / "merged"
    lora.merge_and_unload().save_pretrained(merged_folder)
    auto_class = AutoModelForMaskedLM if task_type is None else AutoModelForSequenceClassification
    reloaded = auto_class.from_pretrained(merged_folder, dtype=torch.float32).eval()
    batch = tokenizer(["GGGAAACCC", "ACGUACGU"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(lora.eval()(**batch).logits, reloaded(**batch).logits, atol=1e-5)


# ---- clear errors for labels that would be misread -------------------------------------------------------------


def test_labels_of_the_wrong_shape_or_kind_are_explained(tokenizer):
    torch.manual_seed(0)
    batch = tokenizer(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    single = RnaFmForSequenceClassification(tiny_config(num_labels=3))
    with pytest.raises(ValueError, match=r"one class index per sequence, integer labels of shape \(2,\)"):
        single(**batch, labels=torch.tensor([[1, 0, 1], [0, 0, 1]]))
    multi = RnaFmForSequenceClassification(
        tiny_config(num_labels=3, problem_type="multi_label_classification")
    )
    with pytest.raises(ValueError, match=r"takes labels of shape \(2, 3\)"):
        multi(**batch, labels=torch.tensor([1.0, 0.0]))
    assert multi(**batch, labels=torch.tensor([[1, 0, 1], [0, 0, 1]])).loss > 0  # integer multi-hot is cast
    regression = RnaFmForSequenceClassification(tiny_config(num_labels=1))
    assert regression(**batch, labels=torch.tensor([3, 5])).loss > 0  # integer targets are cast too
    token = RnaFmForTokenClassification(tiny_config(num_labels=2))
    with pytest.raises(
        ValueError, match=r"Token labels have shape \(2, 9\) but the input has \(2, 11\) tokens"
    ):
        token(**batch, labels=torch.zeros(2, 9, dtype=torch.long))
    pairs = RnaFmForSecondaryStructure(tiny_config())
    with pytest.raises(ValueError, match=r"Pair labels have shape \(2, 11, 11\) but the model's pair map is"):
        pairs(**batch, labels=torch.zeros(2, 11, 11))


def test_labels_outside_the_residues_are_refused_under_trainer_counts(tokenizer):
    """Trainer passes its count of labels (not -100) to scale the loss; a label on <cls>, <eos> or padding would
    make that count wrong, so it is an error there (and ignored in a plain forward)."""
    torch.manual_seed(0)
    batch = tokenizer(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    token = RnaFmForTokenClassification(tiny_config(num_labels=2))
    labels = torch.zeros_like(batch["input_ids"])  # 0 on <cls>, <eos> and padding too
    assert token(**batch, labels=labels).loss > 0
    with pytest.raises(ValueError, match=r"Sequence 0 of the batch has a label at token \(0,\), outside"):
        token(**batch, labels=labels, num_items_in_batch=22)
    pairs = RnaFmForContactPrediction(tiny_config())
    pair_labels = torch.zeros(2, 9, 9)
    assert pairs(**batch, labels=pair_labels).loss > 0
    with pytest.raises(ValueError, match=r"Sequence 1 of the batch has a label at pair \(0, 4\), outside"):
        pairs(**batch, labels=pair_labels, num_items_in_batch=97)


def test_cls_pooling_refuses_left_padding_and_unknown_poolings(tokenizer):
    torch.manual_seed(0)
    model = RnaFmForSequenceClassification(tiny_config(num_labels=2, classifier_pooling="cls"))
    left = RnaFmTokenizer(padding_side="left")(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="pad on the right"):
        model(**left)
    model.config.classifier_pooling = "max"
    with pytest.raises(ValueError, match="classifier_pooling must be 'mean' or 'cls', got 'max'"):
        model(**tokenizer(["ACGU"], return_tensors="pt"))
