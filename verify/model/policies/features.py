"""A profile's `features` section (cameras, state and action widths) as lerobot's input and output features."""

from __future__ import annotations

from typing import Any


def policy_features(features: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    from lerobot.configs import FeatureType, PolicyFeature

    inputs = {
        name: PolicyFeature(type=FeatureType.VISUAL, shape=tuple(int(s) for s in shape))
        for name, shape in features["cameras"].items()
    }
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(int(features["state_dim"]),))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(int(features["action_dim"]),))}
    return inputs, outputs
