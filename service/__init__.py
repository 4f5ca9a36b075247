"""fitserve: train PyTorch models over REST and serve them."""

__version__ = "0.1.0"
