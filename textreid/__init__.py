"""textreid: text-to-image person retrieval in PyTorch."""

from textreid._version import __version__

__all__ = ["__version__"]
