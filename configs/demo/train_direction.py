# The demo DiT, step 2 of 2: the 8,000-step model of configs/demo/train.py trained on with timesteps
# shifted towards noise. Direction is decided in the first sampling steps, from almost pure noise,
# where the best prediction is the prompt's average clip: for "moving right" the object sits left in
# the first frames and right in the last. That average differs between directions more than between
# colours, yet with uniform timesteps the model never learned it (its average for each direction
# was the same centred blob; output change at t=900: 0.011 "moving left" vs "moving right", 0.18
# red vs blue). 1.2's resolution shift, t' = r t / (1 + (r - 1) t), with r = 7 at 32 x 32 x 17
# (0.0625 * sqrt(5) * 50), puts 44% of the steps above t = 0.9 instead of 10%.
#   python scripts/train.py configs/demo/train_direction.py --data-path data/demo_features \
#       --use-features true --load outputs/demo --outputs outputs/demo_direction
#   python tools/demo_world/finalize.py dit outputs/demo_direction --out assets/demo/stdit3
_base_ = ["train.py"]

scheduler = dict(type="rflow", use_timestep_transform=True, transform_scale=50.0, sample_method="uniform")
# the weights and optimizer of --load; steps and data order start again (so to resume a killed run
# of this step from outputs/demo_direction, add --start-from-scratch false)
start_from_scratch = True
warmup_steps = 0
max_steps = 3000
outputs = "outputs/demo_direction"
