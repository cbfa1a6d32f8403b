"""haos: high availability for clusters of embedded-Linux boards."""

__version__ = "0.1.0"
