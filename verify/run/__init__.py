"""The harness: one side on one device, sweeps over many frames and ranks, divergence traces."""
