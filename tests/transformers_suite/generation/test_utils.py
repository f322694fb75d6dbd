"""Stand-in for transformers' `tests/generation/test_utils.py`, which the source distribution does not ship.

Only generative models use `GenerationTesterMixin`; RNA-FM is an encoder and generates nothing."""


class GenerationTesterMixin:
    pass
