"""offload: hand sub-work to the cheapest Claude tier that can do it, and price every call exactly."""

__version__ = "0.1.0"
