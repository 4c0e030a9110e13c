"""Training: optimizer, train state, the jit-compiled train step, checkpoints and the loop."""
