"""Environments a closed-loop rollout drives: the demo's own kinematic world (always offline, `demo_world`) and
lerobot's environment layer (`lerobot_env`: PushT, ALOHA as lerobot installs them). Each gives the policy
dataset-like frames and the rollout the state it records; `factory.make_environment` picks one by name."""
