"""Distributed system services: the cluster layer haos builds on (corosync 3: CPG, votequorum,
cmap)."""
