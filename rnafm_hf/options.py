"""The choices and defaults that the library and the `rnafm-hf` command share, in a module that imports nothing
heavy: the command builds its parser (and answers `--help` or a wrong argument) without loading torch."""

KINDS = ("rna-fm", "mrna-fm", "rna-fm-ss")  # what an original checkpoint holds
DEFAULT_OUTPUT_NAMES = {kind: kind for kind in KINDS}  # convert's output folder by kind
CONVERSION_DTYPES = ("float32", "float16", "bfloat16")
DEFAULT_BASE_MODEL = "cuhkaih/rnafm"  # the released weights' Hub repository

POOLINGS = ("none", "mean", "cls")
LONG_MODES = ("error", "truncate", "window")
MERGES = ("mean", "center")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_BATCH_TOKENS = 4096  # as fast as larger batches on a CPU, in less memory; raise it on a GPU
STORE_FORMATS = ("npy", "safetensors")
DEFAULT_SHARD_MB = 256
SHARD_SECONDS = 120  # a shard is also closed after this long, so a kill loses at most this much work

STRUCTURE_FORMATS = ("ct", "bpseq", "dbn")
FOLD_OUTPUT_FORMATS = (*STRUCTURE_FORMATS, "npy")

PLOT_INSTALL = "pip install 'rnafm-hf[plot]'"
SERVE_INSTALL = "pip install 'rnafm-hf[serve]'"
