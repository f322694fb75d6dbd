"""Stand-in for transformers' `tests/utils/test_configuration_utils.py`, which the source distribution does not ship.

`ConfigTester.check_config_arguments_init` needs only `config_common_kwargs` from it: a value other than the default
for each argument of `PreTrainedConfig.__init__` (transformers 5.24), to check that a model's config passes them on.
"""

config_common_kwargs = {
    "architectures": ["RnaFmForMaskedLM"],
    "output_hidden_states": True,
    "return_dict": False,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "id2label": {0: "ncRNA", 1: "mRNA"},
    "label2id": {"ncRNA": 0, "mRNA": 1},
    "problem_type": "single_label_classification",
}
