"""pi0 on a torch device: device specs, checkpoint loading, the runner, the tiny demo model."""
