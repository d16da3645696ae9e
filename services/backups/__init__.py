"""Backups on the host (systemd timer over SSH) and off-site copies (restic)."""
