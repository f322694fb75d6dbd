"""transformers' common test mixins, vendored unchanged from the transformers 5.24.0 source distribution (see
PROVENANCE.md); run against rnafm_hf by tests/test_transformers_suite.py."""
