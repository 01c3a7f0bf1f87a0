"""The harness: device backends, the pi0 runner, observations, ATE metrics and the gate, the CLI."""
