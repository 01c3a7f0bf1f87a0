"""Judging two trajectories: artifacts on disk, ATE metrics, the gate, the comparator. No torch here."""
