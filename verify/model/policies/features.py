"""A profile's `features` section (cameras, state and action widths) as lerobot's input and output features, and its
`policy` section as a lerobot config."""

from __future__ import annotations

import dataclasses
from typing import Any

from verify_ate.verify.errors import InputError


def policy_features(features: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    from lerobot.configs import FeatureType, PolicyFeature

    inputs = {
        name: PolicyFeature(type=FeatureType.VISUAL, shape=tuple(int(s) for s in shape))
        for name, shape in features["cameras"].items()
    }
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(int(features["state_dim"]),))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(int(features["action_dim"]),))}
    return inputs, outputs


def profile_config(config_class: Any, profile: dict, **fixed: Any) -> Any:
    """lerobot's `config_class` from a tiny profile: its `policy` section names config fields by lerobot's own names
    (lists become tuples), its `features` the inputs and outputs; `fixed` wins over both (what every tiny build
    needs: offline, on a device). A name that is not a field of the class is an InputError."""
    sizes = dict(profile["policy"])
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(sizes) - known)
    if unknown:
        raise InputError(f"tiny profile: {', '.join(unknown)} not a field of lerobot's {config_class.__name__}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in sizes.items()}
    inputs, outputs = policy_features(profile["features"])
    return config_class(**{**values, "input_features": inputs, "output_features": outputs, **fixed})
