"""Inputs from disk: LeRobot dataset frames, the generated demo dataset, joint-log CSV files."""
