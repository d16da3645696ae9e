"""Pulumi.yaml's config block and the README's configuration reference come from core/settings.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from core.settings import StackSettings, load_settings
from tests.conftest import REPO_ROOT
from tools import config_reference


def test_generated_files_are_up_to_date() -> None:
    # Fails after a settings change until `make docs` is run (and the result committed).
    assert config_reference.main(["--check"]) == 0, "run `make docs`"


def test_every_setting_is_in_the_readme_and_pulumi_yaml() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    sections = [f.alias or n for n, f in StackSettings.model_fields.items() if n != "stack"]
    assert list(project["config"]) == sections
    for leaf in config_reference.leaves():
        assert f"| `{leaf.key}` |" in readme
        assert leaf.description


def test_pulumi_yaml_declarations_follow_the_project_schema() -> None:
    # pulumi sdk v3.272.0 project.json configTypeDeclaration: these keys only, these types.
    allowed_keys = {"type", "description", "default", "secret", "items", "value"}
    allowed_types = {"string", "integer", "boolean", "array", "object"}
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    for key, declaration in project["config"].items():
        assert set(declaration) <= allowed_keys, key
        assert declaration["type"] in allowed_types, key
        assert not declaration.get("secret"), key  # a secret with a default is refused by the CLI


def test_pulumi_yaml_defaults_are_what_the_program_uses() -> None:
    """A stack without the optional sections gets Pulumi.yaml's defaults from the CLI; the program
    must read them exactly as its own defaults."""
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    stack = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    required = {
        k.split(":", 1)[1]: v for k, v in stack.items() if k.split(":", 1)[1] in ("ssh", "domains", "acme")
    }
    from_cli: dict[str, Any] = dict(required)
    for key, declaration in project["config"].items():
        if "default" in declaration:
            from_cli[key] = declaration["default"]
    assert load_settings("dev", from_cli.get) == load_settings("dev", required.get)


def test_a_field_without_description_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import ServerSettings

    field = ServerSettings.model_fields["type"]
    monkeypatch.setattr(field, "description", None)
    with pytest.raises(SystemExit, match=r"server\.type has no description"):
        config_reference.leaves()
