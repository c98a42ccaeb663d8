"""Step and training benchmarks of gradtx against optax and torch.optim (``python -m benchmarks``)."""
