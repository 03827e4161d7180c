"""crosswalk: teach a car to see pedestrians, and size the data center that does it."""

__version__ = "0.1.0"
