"""mnigs: the Mesh Network Internet Gateway System."""

__version__ = "0.1.0"
