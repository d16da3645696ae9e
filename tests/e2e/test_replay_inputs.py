"""Fast checks of the e2e replay's bookkeeping (no Docker; part of `make test`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Deploy
from tests.e2e import images, replay
from tools.mocks import masked, reveal


def docker_plan(deploy: Deploy) -> tuple[dict[str, Any], dict[str, Any]]:
    run = deploy()
    resources = [
        {"type": r.type, "name": r.name, "inputs": masked(r.inputs)} for r in run.monitor.registrations
    ]
    revealed = {r.name: reveal(r.inputs) for r in run.monitor.registrations if r.type.startswith("docker:")}
    return {"resources": resources}, revealed


def test_every_docker_input_of_the_plan_is_replayed_or_listed_with_a_reason(deploy: Deploy) -> None:
    plan, revealed = docker_plan(deploy)
    resources = replay.docker_resources(plan, revealed)
    assert {kind for kind, _n, _i in resources} == {
        replay.NETWORK_TYPE,
        replay.CONTAINER_TYPE,
        *replay.IMAGE_TYPES,
    }
    for kind, name, inputs in resources:
        if kind == replay.CONTAINER_TYPE:
            replay.check_inputs(
                "container", name, inputs, replay.CONTAINER_REPLAYED, replay.CONTAINER_NOT_REPLAYED
            )
        elif kind == replay.NETWORK_TYPE:
            replay.check_inputs("network", name, inputs, replay.NETWORK_REPLAYED, replay.NETWORK_NOT_REPLAYED)


def test_an_input_on_neither_list_fails_the_tier() -> None:
    with pytest.raises(replay.UnreplayedInputError, match=r"\['devices'\]"):
        replay.check_inputs(
            "container",
            "x",
            {"name": "x", "devices": []},
            replay.CONTAINER_REPLAYED,
            replay.CONTAINER_NOT_REPLAYED,
        )


def test_secrets_come_from_the_test_render_only_where_plan_json_masks_them() -> None:
    assert replay.merge_secrets({"a": "[secret]", "b": 1}, {"a": "value", "b": 1}) == {"a": "value", "b": 1}
    with pytest.raises(AssertionError, match=r"plan\.json has 1"):
        replay.merge_secrets({"b": 1}, {"b": 2})


def test_every_plan_image_has_a_builder_and_an_unknown_one_is_named(deploy: Deploy) -> None:
    plan, revealed = docker_plan(deploy)
    names = [
        i["name"] for kind, _n, i in replay.docker_resources(plan, revealed) if kind in replay.IMAGE_TYPES
    ]
    assert {images.split_image(n)[0] for n in names} <= set(images.BUILDERS)
    with pytest.raises(images.UnknownImageError, match="example/unknown"):
        images.ensure_images(None, ["example/unknown:1"], print)
