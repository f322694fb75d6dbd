"""Check a device name before any work: a typo or a device this machine lacks is an error that says so."""

from __future__ import annotations

import torch


def checked_device(device: str | torch.device | None) -> torch.device | None:
    """
    `device` as a `torch.device`, or None for the default. A name torch does not know, or a device this
    torch build or machine does not have (`cuda` on a CPU-only build, `cuda:3` with two GPUs), raises
    `ValueError` naming it and the devices there are.

    ```python
    >>> checked_device("cpu")
    device(type='cpu')
    >>> checked_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: device 'gpu' is not a device name torch knows (cpu, cuda, cuda:1, mps, xpu, ...); this machine has: cpu.

    ```
    """
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device {str(device)!r} is not a device name torch knows (cpu, cuda, cuda:1, mps, xpu, ...); this "
            f"machine has: {', '.join(available_devices())}."
        ) from None
    if parsed.type in ("cpu", "meta"):
        return parsed
    module = getattr(torch, parsed.type, None)
    if parsed.type != "mps" and not hasattr(module, "device_count"):
        return parsed  # a backend torch cannot count for us (xla, ...): its own errors will tell
    count = module.device_count()
    if parsed.type == "mps":
        count = int(torch.backends.mps.is_available())
    if count == 0 or (parsed.index is not None and parsed.index >= count):
        build = f"torch {torch.__version__}"
        lacking = f"no {parsed.type} device" if count == 0 else f"only {count} {parsed.type} device(s)"
        raise ValueError(
            f"device {str(device)!r}: {build} sees {lacking} here; this machine has: "
            f"{', '.join(available_devices())}."
        )
    return parsed


def available_devices() -> list[str]:
    """The devices torch can use here: `cpu`, then `cuda:0`, ... and `mps` where present."""
    names = ["cpu"]
    names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        names += [f"xpu:{index}" for index in range(torch.xpu.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names
