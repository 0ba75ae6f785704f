# Inherits base.py and changes only the model depth and the seed.
_base_ = ["base.py"]
seed = 7
model = dict(depth=4)
