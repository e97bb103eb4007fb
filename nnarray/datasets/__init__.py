"""MNIST-family datasets: see the loaders."""
