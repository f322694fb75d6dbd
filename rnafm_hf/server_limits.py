"""What one request to the web app may hold (`ServerLimits`); imports nothing heavy, so that `rnafm-hf serve
--help` shows the defaults at once."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    """
    What one request may hold, and how many requests of each kind run at once.

    `max_fold_cost` bounds a fold request by the sum of its sequences' squared lengths (nt²): the structure head
    works on the L x L pair map, so its time and memory grow with L². The default, 1.1 M, lets one sequence of
    the longest the model folds (1,022 nt: 1,044,484 nt², about 1.2 GB and a minute or two on a CPU) through
    alone, or many shorter ones (50 of 140 nt), so no request holds the fold queue much longer than that.
    """

    max_sequences: int = 50
    max_nucleotides: int = 20_000
    max_upload_mb: float = 5.0
    concurrency: int = 1
    queue_size: int = 32
    max_fold_cost: int = 1_100_000

    def __post_init__(self) -> None:
        for name in ("max_sequences", "max_nucleotides", "concurrency", "queue_size", "max_fold_cost"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be positive; got {self.max_upload_mb}.")

    @classmethod
    def from_environment(cls, prefix: str = "RNAFM_") -> ServerLimits:
        """Limits from variables such as `RNAFM_MAX_SEQUENCES` (a Space's settings); unset ones keep the default."""
        values = {}
        for field in dataclasses.fields(cls):
            text = os.environ.get(prefix + field.name.upper())
            if text:
                values[field.name] = type(field.default)(text)
        return cls(**values)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_request_bytes(self) -> int:
        """The largest HTTP request body the server reads: twice the upload limit, as a paste at the limit
        grows in JSON (a line break is sent as two characters), and 64 KiB for the other fields and the
        multipart framing of an upload."""
        return 2 * self.max_upload_bytes + 2**16

    def describe(self) -> str:
        return (
            f"Up to {self.max_sequences:,} sequences and {self.max_nucleotides:,} nt per request; "
            f"uploaded files up to {self.max_upload_mb:g} MB."
        )
