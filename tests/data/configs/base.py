# Base config for tests/test_config.py: the child overrides one nested key and inherits the rest.
seed = 42
dtype = "bf16"
model = dict(
    type="TinyNet",
    depth=2,
    hidden_size=8,
)
scheduler = dict(type="TinyScheduler", num_sampling_steps=30, cfg_scale=7.0)
