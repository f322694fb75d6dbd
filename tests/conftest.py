import argparse
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
# The original loader calls torch.load without weights_only; torch >= 2.6 needs Namespace allow-listed for it.
torch.serialization.add_safe_globals([argparse.Namespace])
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_fasta(path: Path) -> list[tuple[str, str]]:
    records, name, lines = [], None, []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            if name is not None:
                records.append((name, "".join(lines)))
            name, lines = line[1:].split()[0], []
        else:
            lines.append(line.strip())
    if name is not None:
        records.append((name, "".join(lines)))
    return records


@pytest.fixture(scope="session")
def example_sequences() -> list[tuple[str, str]]:
    path = DATA / "example.fasta"
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data folder (../shared/data) is needed for this test")
    return read_fasta(path)
