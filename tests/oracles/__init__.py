"""Test oracles: independent checkers of what the program renders (not shipped; see README)."""
