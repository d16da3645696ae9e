"""tracker.toml (pure), from the template of the configuration schema the pinned release loads.
Templates: services/tracker/templates/."""

from __future__ import annotations

from pathlib import Path

from core import layout
from core.rendering import Templates
from core.settings import StackSettings, tracker_release, tracker_schema_version

TEMPLATES = Templates(Path(__file__).resolve().parent / "templates")

# Configuration schema -> template. Every tracker release the settings accept (TRACKER_RELEASES)
# maps to a schema that has a template here; tests/test_rendering.py keeps the two in step.
TRACKER_TEMPLATES = {"2.0.0": "tracker/tracker.toml.j2"}


def render_tracker_toml(settings: StackSettings) -> str:
    tracker = settings.tracker
    schema = tracker_schema_version(settings.images.tracker)
    return TEMPLATES.render(
        TRACKER_TEMPLATES[schema],
        stack=settings.stack,
        tracker_release=tracker_release(settings.images.tracker),
        schema_version=schema,
        log_level=tracker.log_level,
        private=tracker.private,
        announce_interval=tracker.announce_interval,
        database_driver=tracker.database,
        database_path=layout.TRACKER_DATABASE_PATH,
        udp_ports=tracker.udp_ports,
        http_ports=[layout.http_tracker_port(i) for i in range(len(settings.domains.http_trackers))],
        api_port=layout.TRACKER_API_PORT,
        health_port=layout.TRACKER_HEALTH_PORT,
    )
