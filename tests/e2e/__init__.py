"""End-to-end tier: the plan's container layer on a real dockerd (see README.md in this folder)."""
