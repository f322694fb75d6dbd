"""The `rnafm-hf` command: `rnafm-hf convert ...`, `push ...`, `fold ...`, `embed ...`, `score ...`,
`evaluate ...`, `serve ...` (`rnafm-hf SUBCOMMAND --help` for each)."""

from __future__ import annotations

import argparse
import errno
import math
import sys
from collections.abc import Sequence
from pathlib import Path

# 0 done, 1 error (a failed check or the user's input), 2 usage (argparse's own), 130 interrupted (Ctrl-C).
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
FILE_SYSTEM_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


# The library speaks of its parameters; the command, of its flags. Each library phrase and what it is here.
PARAMETERS_AS_FLAGS = {
    "skip_invalid=True": "--skip-invalid",
    "long='truncate'": "--long truncate",
    "long='window'": "--long window",
    "long='error'": "--long error",
    "dtype='bfloat16'": "--dtype bfloat16",
    "dtype='float32'": "--dtype float32",
    "overwrite=True": "--overwrite",
    "num_attention_heads=...": "--num-attention-heads N",
    "window_size and window_stride": "--window-size and --window-stride",
    "batch_tokens": "--batch-tokens",
    "pass a list: ['ACGU...']": "give a FASTA file",
    "pll_difference=True": "--pll-difference",
    "leave dbn out of formats": "leave dbn out of --formats",
    "raise the threshold": "raise --threshold",
    "give mutations too": "give --mutations too",
}


def _in_flags(message: str) -> str:
    for parameter, flag in PARAMETERS_AS_FLAGS.items():
        message = message.replace(parameter, flag)
    return message


def _say(message: str) -> None:
    print(_in_flags(message), file=sys.stderr, flush=True)


def _count(number: int, noun: str) -> str:
    """`1 sequence`, `2 sequences`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _format_size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _convert(args: argparse.Namespace) -> int:
    from .conversion import convert_checkpoint
    from .fasta import read_fasta

    overrides = {}
    if args.num_attention_heads is not None:
        overrides["num_attention_heads"] = args.num_attention_heads
    if args.token_dropout is not None:
        overrides["token_dropout"] = args.token_dropout
    if args.verify_fasta and args.verify is False:
        raise ValueError("--verify-fasta names sequences to verify on, but --no-verify skips verification.")
    sequences = read_fasta(args.verify_fasta) if args.verify_fasta else None
    result = convert_checkpoint(
        args.checkpoint,
        args.output,
        kind=args.kind,
        dtype=args.dtype,
        verify=args.verify,
        verify_sequences=sequences,
        overwrite=args.overwrite,
        model_id=args.push_to_hub,
        base_model=args.base_model,
        config_overrides=overrides,
        backbone=args.backbone,
        threshold=args.threshold,
        log=_say,
    )
    print(
        f"Wrote {result.output_dir} ({result.kind}, {args.dtype}, {_format_size(result.size_bytes)}) "
        f"in {result.seconds:.1f} s"
    )
    if args.push_to_hub:
        _publish(result.output_dir, args.push_to_hub, args)
    return 0


def _publish(folder: Path, repo_id: str, args: argparse.Namespace) -> None:
    from .hub import point_card_at_repo, push_folder_to_hub

    if point_card_at_repo(folder, repo_id):
        _say(f"The model card's code in {folder / 'README.md'} now loads {repo_id!r}.")
    _say(f"Uploading {folder} to {repo_id}")
    url = push_folder_to_hub(
        folder, repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
    )
    print(f"Published: {url}")


def _push(args: argparse.Namespace) -> int:
    if not (args.folder / "config.json").is_file():
        raise FileNotFoundError(f"{args.folder} has no config.json; is it a converted folder?")
    _publish(args.folder, args.repo_id, args)
    return 0


def _fold(args: argparse.Namespace) -> int:
    from .folding import fold_fasta, parse_formats, summary_table

    rows = fold_fasta(
        args.fasta,
        args.model,
        args.output,
        formats=parse_formats(args.formats),
        threshold=args.threshold,
        canonical_only=args.canonical_only,
        plot=args.plot,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        skip_invalid=args.skip_invalid,
        long=args.long,
        progress=not args.quiet,
        log=_say,
    )
    if not args.quiet:
        print(summary_table(rows))
    folded = sum(row.skipped is None for row in rows)
    skipped = len(rows) - folded
    if not args.quiet:
        print(
            f"Folded {folded} of {_count(len(rows), 'sequence')} into {args.output}"
            + (f" ({skipped} skipped, listed above)" if skipped else "")
        )
    return 0 if folded else EXIT_ERROR


def _embed(args: argparse.Namespace) -> int:
    from .embedding_store import embed_to_folder

    try:
        result = embed_to_folder(
            args.fasta,
            args.output,
            args.model,
            format=args.format,
            layers=args.layers,
            pooling=args.pooling,
            long=args.long,
            window_size=args.window_size,
            window_stride=args.window_stride,
            merge=args.window_merge,
            batch_tokens=args.batch_tokens,
            device=args.device,
            dtype=args.dtype,
            skip_invalid=args.skip_invalid,
            overwrite=args.overwrite,
            shard_mb=args.shard_mb,
            progress=not args.quiet,
            log=_say,
        )
    finally:
        is_main = _end_processes()
    if is_main:
        skipped = f"; {len(result.skipped)} skipped (listed above)" if result.skipped else ""
        earlier = f", {result.already_done} from an earlier run" if result.already_done else ""
        if not args.quiet:
            print(
                f"Embedded {_count(result.embedded, 'sequence')} into {result.output_dir}{earlier}{skipped}"
            )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_structures

    evaluation = evaluate_structures(args.predicted, args.reference, skip_invalid=args.skip_invalid, log=_say)
    if not evaluation.scores:
        why = "every record on both sides was skipped" if evaluation.invalid else "no id is on both sides"
        _say(f"rnafm-hf evaluate: error: nothing to score: {why} ({args.predicted}, {args.reference}).")
        return EXIT_ERROR
    evaluation.write_tsv(args.output)
    means = evaluation.means
    print(
        f"Scored {_count(len(evaluation.scores), 'structure')} into {args.output}; means: "
        + ", ".join(
            f"{name} {'n/a' if math.isnan(value) else f'{value:.4f}'}" for name, value in means.items()
        )
    )
    return 0


def _score(args: argparse.Namespace) -> int:
    from .scoring import score

    scores = score(
        args.fasta,
        args.model,
        mutations=args.mutations,
        pll_difference=args.pll_difference,
        output=args.output,
        batch_tokens=args.batch_tokens,
        device=args.device,
        progress=not args.quiet,
    )
    if not args.quiet:
        what = _count(len(scores), "mutation" if args.mutations else "sequence")
        print(f"Scored {what} into {args.output}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import ServerLimits

    limits = ServerLimits(**{field: getattr(args, field) for field in LIMIT_HELP})
    from .webapp import serve  # ImportError with the install command when Gradio is missing

    _say(f"Loading {args.model}" + (f" and {args.ss_model}" if args.ss_model else ""))
    serve(args.model, args.ss_model, args.host, args.port, limits, args.device)
    return 0


# The options of `serve` that set `ServerLimits`, by field.
LIMIT_HELP = {
    "max_sequences": "sequences per request",
    "max_nucleotides": "nucleotides per request, in all",
    "max_upload_mb": "size of an uploaded file in MB",
    "max_fold_cost": "sum of squared sequence lengths per fold request, in nt² (the pair head is quadratic)",
    "concurrency": "requests of each kind (embed, fold) run at once; the rest wait in the queue",
    "queue_size": "requests that may wait; more are turned away",
}


def _end_processes() -> bool:
    """Close accelerate's process group, if `accelerate launch` started several processes (exiting with it open
    can abort the process: gloo's threads are still up); True in the main process."""
    from accelerate import PartialState

    if not PartialState._shared_state:  # failed before the processes met
        return True
    state = PartialState()
    is_main = state.is_main_process
    if state.num_processes > 1:
        state.destroy_process_group()
    return is_main


def _positive_int(text: str) -> int:
    """A whole number of at least 1, or a usage error before anything runs."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1; got {text!r}")
    return value


def _layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer numbers such as -1,6; got {text!r}"
        ) from None


def _add_publish_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--private", action="store_true", help="create the repo as private (if it does not exist)"
    )
    parser.add_argument("--revision", help="branch to upload to (created if needed; default: main)")
    parser.add_argument("--commit-message", help="commit message of the upload")


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnafm-hf")
    except PackageNotFoundError:
        return "(not installed)"


def _check_input_file(args: argparse.Namespace) -> None:
    """A missing input file is named before anything heavy is imported."""
    for name, what in (
        ("fasta", "FASTA file"),
        ("checkpoint", "checkpoint"),
        ("predicted", "folder"),
        ("reference", "file or folder"),
        ("mutations", "mutations file"),
    ):
        path = getattr(args, name, None)
        if name == "mutations" and path == "-":
            raise ValueError("--mutations reads a file; standard input (-) is for the FASTA.")
        if path and path != "-" and not path.startswith("hf://") and not Path(path).exists():
            raise ValueError(f"no such {what}: {path}")
    if args.command in ("score", "evaluate"):  # a table file, named before the compute rather than after it
        table = args.output
        if table.is_dir():
            raise ValueError(
                f"--output {table} is a folder; name the TSV file to write, e.g. {table / 'scores.tsv'}"
            )
        if not table.parent.is_dir():
            raise ValueError(f"--output {table}: the folder {table.parent} does not exist; create it first.")
        inputs = [getattr(args, name, None) for name in ("fasta", "mutations", "predicted", "reference")]
        if any(path and path != "-" and Path(path).resolve() == table.resolve() for path in inputs):
            raise ValueError(f"--output {table} is one of the inputs; write the scores to another file.")


def build_parser() -> argparse.ArgumentParser:
    from .options import (
        CONVERSION_DTYPES,
        DEFAULT_BASE_MODEL,
        DEFAULT_OUTPUT_NAMES,
        FOLD_OUTPUT_FORMATS,
        KINDS,
        PLOT_INSTALL,
    )

    parser = argparse.ArgumentParser(
        prog="rnafm-hf", description="RNA-FM and mRNA-FM for Hugging Face transformers.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"rnafm-hf {_installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        help="convert an original .pth file into a transformers folder",
        description="Convert an original RNA-FM, mRNA-FM or secondary-structure .pth file into a folder that "
        "transformers' Auto classes load (also without rnafm-hf, with trust_remote_code=True), verify it against "
        "the original fm code and optionally publish it on the Hub.",
    )
    convert.add_argument("checkpoint", help="local .pth file or hf://OWNER/REPO[@REVISION]/FILE")
    convert.add_argument(
        "-o",
        "--output",
        help="output folder (default by kind: " + ", ".join(DEFAULT_OUTPUT_NAMES.values()) + ")",
    )
    convert.add_argument(
        "--kind", choices=KINDS, help="skip detection from the contents and read the file as this"
    )
    convert.add_argument(
        "--dtype", choices=CONVERSION_DTYPES, default="float32", help="weight dtype (default float32)"
    )
    convert.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare with the original fm code (default: when fm is installed; --verify requires it)",
    )
    convert.add_argument(
        "--verify-fasta",
        help="FASTA file of sequences to verify on (default: the original README's examples)",
    )
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier convert's files in the output folder (other files there are kept)",
    )
    convert.add_argument(
        "--backbone",
        help="for a secondary-structure file: the RNA-FM backbone it was trained on (RNA-FM_pretrained.pth, "
        "hf://OWNER/REPO/FILE or a converted rna-fm folder), whose arguments give token_dropout and the head "
        "count (default: RNA-FM_pretrained.pth next to the file or in torch hub's cache, else fm's defaults)",
    )
    convert.add_argument(
        "--threshold",
        type=float,
        help="for a secondary-structure file: its pairing threshold (default: the original config's for the "
        "head the file name names: PDB-All 0.33993712, bpRNA 0.47729617, PDB-TR1 0.07595872; else 0.5)",
    )
    convert.add_argument(
        "--num-attention-heads",
        type=int,
        help="head count for bare state dicts with no backbone, which do not store it (default 20, as all "
        "released models)",
    )
    convert.add_argument(
        "--token-dropout",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="token-dropout scaling for bare state dicts with no backbone, which do not store it (default off, "
        "as fm when the arguments lack it)",
    )
    convert.add_argument("--push-to-hub", metavar="REPO_ID", help="publish the folder to this Hub model repo")
    convert.add_argument(
        "--base-model", default=DEFAULT_BASE_MODEL, help="base_model in the secondary-structure model card"
    )
    _add_publish_options(convert)
    convert.set_defaults(handler=_convert)

    push = commands.add_parser(
        "push",
        help="upload a converted folder to the Hub",
        description="Upload a converted folder to the Hub.",
    )
    push.add_argument("folder", type=Path)
    push.add_argument("repo_id")
    _add_publish_options(push)
    push.set_defaults(handler=_push)

    fold = commands.add_parser(
        "fold",
        help="predict secondary structures for a FASTA file",
        description="Predict the secondary structure of every sequence in a FASTA file with a converted "
        "RNA-FM-ResNet folder; write one file per sequence and format, named after the FASTA id, and a summary.",
    )
    _add_input_options(
        fold, "folder for the structure files", model="rna-fm-ss", kind="secondary-structure folder"
    )
    fold.add_argument(
        "--threshold",
        type=float,
        help="pairing-probability threshold (default: the model's ss_threshold, set by convert for its head)",
    )
    fold.add_argument(
        "--canonical-only", action="store_true", help="keep only AU, UA, GC, CG, GU and UG pairs"
    )
    fold.add_argument(
        "--formats",
        default=",".join(FOLD_OUTPUT_FORMATS),
        help="comma-separated, from " + ",".join(FOLD_OUTPUT_FORMATS) + " (default: all)",
    )
    fold.add_argument(
        "--plot", action="store_true", help=f"also write a PNG heat map per sequence (needs {PLOT_INSTALL})"
    )
    fold.add_argument(
        "--batch-size",
        type=_positive_int,
        default=4,
        help="sequences per forward pass (default 4; one 1000-nt sequence adds about 1.2 GB on CPU)",
    )
    fold.add_argument(
        "--device",
        help="torch device, e.g. cpu, cuda or cuda:1 (default: transformers' choice, a GPU if any)",
    )
    fold.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier fold run in the output folder (only its own files; others are kept)",
    )
    fold.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip (and list) duplicate ids, empty sequences, unknown characters and (without --long window) "
        "sequences over 1022 nt, instead of stopping",
    )
    fold.add_argument(
        "--long",
        choices=("error", "window"),
        default="error",
        help="sequences over 1022 nt: error (default, before any compute) or window (windowed embeddings, the pair "
        "head in tiles; pairs farther apart than a window are scored from separate contexts)",
    )
    _add_quiet_option(fold)
    fold.set_defaults(handler=_fold)

    _add_embed_parser(commands)
    _add_evaluate_parser(commands)
    _add_score_parser(commands)
    _add_serve_parser(commands)
    return parser


def _add_score_parser(commands) -> None:

    score = commands.add_parser(
        "score",
        help="pseudo-log-likelihoods of sequences and zero-shot scores of mutations",
        description="Zero-shot scores from the masked-LM head, over A, C, G, U (the 64 codons for mRNA-FM): per "
        "sequence its pseudo-log-likelihood (pll, natural log) and pll_per_residue; with --mutations, per row "
        "the masked marginal and the wild-type marginal (RNAGym's conventions).",
    )
    _add_input_options(score, "TSV of the scores", fasta="FASTA file of the (wild-type) sequences")
    score.add_argument(
        "--mutations",
        help="TSV with the columns id and mutation (1-based, e.g. A5G; several joined by ':', as A5G:C7U)",
    )
    score.add_argument(
        "--pll-difference",
        action="store_true",
        help="with --mutations: also the mutant's PLL minus the wild type's",
    )
    _add_compute_options(score, "masked copies packed without padding")
    _add_quiet_option(score)
    score.set_defaults(handler=_score)


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score predicted secondary structures against known ones",
        description="Score predicted structures against known ones, matched by id: precision, recall, F1 and MCC "
        "over base pairs and the F1 over crossed (pseudoknotted) pairs, per structure (a TSV) and their means.",
    )
    evaluate.add_argument(
        "predicted",
        help="folder of .ct/.bpseq/.dbn (.db, .dot) files, by stem (a fold output folder is one), or a dot-bracket "
        "file of records (>id, sequence, structure)",
    )
    evaluate.add_argument(
        "--reference",
        required=True,
        help="the known structures: such a folder, or a dot-bracket file of records (>id, sequence, structure)",
    )
    evaluate.add_argument("-o", "--output", required=True, type=Path, help="TSV of the per-structure scores")
    evaluate.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out (and list) records that cannot be read or whose two sequences differ, instead of stopping",
    )
    evaluate.set_defaults(handler=_evaluate)


def _add_input_options(
    command: argparse.ArgumentParser,
    output: str,
    *,
    fasta: str = "FASTA file (plain or compressed)",
    model: str = "rna-fm",
    kind: str = "folder",
) -> None:
    """The positional FASTA, --model and -o/--output that fold, embed and score share."""
    command.add_argument("fasta", help=f"{fasta}; - reads standard input")
    command.add_argument("--model", default=model, help=f"converted {kind} or Hub id (default {model})")
    command.add_argument("-o", "--output", required=True, type=Path, help=output)


def _add_compute_options(command: argparse.ArgumentParser, packing: str) -> None:
    """--batch-tokens and --device, as embed and score take them."""
    from .options import DEFAULT_BATCH_TOKENS

    command.add_argument(
        "--batch-tokens",
        type=_positive_int,
        default=DEFAULT_BATCH_TOKENS,
        help=f"model tokens per batch, {packing} (default {DEFAULT_BATCH_TOKENS})",
    )
    command.add_argument("--device", help="torch device, e.g. cpu, cuda or cuda:1 (default: a GPU if any)")


def _add_quiet_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no closing line (errors still show)"
    )


def _add_serve_parser(commands) -> None:
    from .options import SERVE_INSTALL
    from .server_limits import ServerLimits

    defaults = ServerLimits()
    serve = commands.add_parser(
        "serve",
        help="the web app: embeddings and structures in the browser",
        description="Serve the RNA-FM web app (Gradio): paste sequences or upload a FASTA file, download "
        f"embeddings, see and download secondary structures. Needs {SERVE_INSTALL}.",
    )
    serve.add_argument("--model", default="rna-fm", help="converted RNA-FM folder or Hub id (default rna-fm)")
    serve.add_argument(
        "--ss-model", help="converted secondary-structure folder or Hub id (adds the structure tab)"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    serve.add_argument(
        "--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else 7860 or the next free one)"
    )
    for field, explanation in LIMIT_HELP.items():
        default = getattr(defaults, field)
        serve.add_argument(
            "--" + field.replace("_", "-"),
            type=type(default),
            default=default,
            help=f"{explanation} (default {default:g})",
        )
    serve.add_argument("--device", help="torch device, e.g. cpu or cuda (default: a GPU if any)")
    serve.set_defaults(handler=_serve)


def _add_embed_parser(commands) -> None:
    from .options import (
        COMPUTE_DTYPES,
        DEFAULT_SHARD_MB,
        LONG_MODES,
        MERGES,
        POOLINGS,
        SHARD_SECONDS,
        STORE_FORMATS,
    )

    embed = commands.add_parser(
        "embed",
        allow_abbrev=False,
        help="embed every sequence of a FASTA file",
        description="Embed every sequence of a FASTA file with a converted RNA-FM or mRNA-FM folder: one array per "
        "sequence, (L, hidden) with <cls>/<eos> removed or pooled to (hidden,), plus index.tsv. Running the same "
        "command again finishes an interrupted run. Under `accelerate launch -m rnafm_hf embed ...` the processes "
        "share the work.",
    )
    _add_input_options(embed, "output folder")
    embed.add_argument(
        "--layers",
        type=_layer_list,
        default=[-1],
        help="comma-separated layers: 0 = embeddings, -1 = last (default); several give a leading layer axis",
    )
    embed.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="none",
        help="none: per-residue (L, hidden); mean: over the sequence's residues only; cls: the <cls> vector "
        "(with windows: the mean of the windows' <cls> vectors)",
    )
    embed.add_argument(
        "--format",
        choices=STORE_FORMATS,
        default="npy",
        help="npy: one <id>.npy per sequence (default); safetensors: shards with an index, for large runs",
    )
    _add_compute_options(embed, "packed without padding")
    embed.add_argument(
        "--dtype",
        choices=COMPUTE_DTYPES,
        default="float32",
        help="compute precision; bfloat16/float16 run under autocast, arrays stay float32 (float16: GPU only)",
    )
    embed.add_argument(
        "--long",
        choices=LONG_MODES,
        default="error",
        help="sequences over 1022 nt (codons for mRNA-FM): error (default, before any compute), truncate to the "
        "first 1022, or window",
    )
    embed.add_argument(
        "--window-size", type=_positive_int, help="tokens per window with --long window (default 1022)"
    )
    embed.add_argument(
        "--window-stride", type=_positive_int, help="tokens between window starts (default half a window)"
    )
    embed.add_argument(
        "--window-merge",
        choices=MERGES,
        default="mean",
        help="mean: each position averaged over its windows (default); center: from the window where it is "
        "farthest from a cut",
    )
    embed.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip (and list) duplicate ids, empty sequences, unknown characters instead of stopping",
    )
    embed.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier embed run in the output folder (only its own files; others are kept)",
    )
    embed.add_argument(
        "--shard-mb",
        type=_positive_int,
        default=DEFAULT_SHARD_MB,
        help=f"size of safetensors shards in MB (default {DEFAULT_SHARD_MB}; a shard is also closed after "
        f"{SHARD_SECONDS} s of work, so a killed run loses at most that)",
    )
    _add_quiet_option(embed)
    embed.set_defaults(handler=_embed)


def _joined_layers(argv: Sequence[str]) -> list[str]:
    """`--layers -1,6` -> `--layers=-1,6`: argparse takes "-1,6" for an option, not a value."""
    joined, items = [], iter(argv)
    for item in items:
        if item == "--layers":
            item = f"--layers={next(items, '')}"
        joined.append(item)
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_joined_layers(sys.argv[1:] if argv is None else argv))
    try:
        _check_input_file(args)
    except ValueError as error:
        _say(f"rnafm-hf {args.command}: error: {error}")
        return EXIT_ERROR
    from transformers.utils import logging

    from . import register
    from .hub import PublishError
    from .verification import ParityError

    register()  # `import rnafm_hf` does it, except in this command, which waits for checked arguments
    bars_were_on = logging.is_progress_bar_enabled()
    if getattr(args, "quiet", False):  # transformers' own bars too (loading weights), for this command only
        logging.disable_progress_bar()
    try:
        return args.handler(args)
    except ParityError as error:
        if error.report is not None:
            _say(error.report.to_text())
        _say(f"rnafm-hf {args.command}: verification failed: {error}")
        return EXIT_ERROR
    except PublishError as error:
        _say(f"rnafm-hf {args.command}: {error}")
        return EXIT_ERROR
    except (ValueError, ImportError, OSError) as error:
        _say(f"rnafm-hf {args.command}: error: {_described(error)}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _say(
            f"rnafm-hf {args.command}: interrupted. Files are written whole or not at all; run the same command "
            "again to finish (embed and fold resume)."
        )
        return EXIT_INTERRUPTED
    finally:
        if bars_were_on:
            logging.enable_progress_bar()


def _described(error: BaseException) -> str:
    """The error in one line; for the file-system errors a user can fix, what happened to which file."""
    if isinstance(error, OSError) and error.errno in FILE_SYSTEM_ERRORS:
        where = f" while writing {error.filename}" if error.filename else ""
        return f"{FILE_SYSTEM_ERRORS[error.errno]}{where}. Free space or choose another --output, then run again."
    if isinstance(error, PermissionError):
        return f"permission denied: {error.filename or error}. Choose a folder you may write to."
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
