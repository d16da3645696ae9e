"""The Torrust tracker: its container and its tracker.toml."""
