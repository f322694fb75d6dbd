"""Stand-in for transformers' `tests/exporters/test_export.py`, which the source distribution does not ship.

`ExportTesterMixin` adds transformers' `torch.export` tests to `ModelTesterMixin`; without the module they are not
run here (tests/test_transformers_suite.py exports the models with torch.export itself)."""


class ExportTesterMixin:
    pass
