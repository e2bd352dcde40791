"""Every Dockerfile in the repo is hadolint clean and follows the image rules of issue #10:
multi-stage, `ARG BASE_IMAGE` defaulting to the official Python 3.11 slim image, a non-root
final user and a HEALTHCHECK."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from deploy_tools import REPO, run

from xcagw_devstack.launcher import GRPC_SERVICES

DOCKERFILES = sorted([*REPO.glob("services/*/Dockerfile"), *REPO.glob("deploy/*.Dockerfile")])
IDS = [str(p.relative_to(REPO)) for p in DOCKERFILES]


def test_every_service_and_compose_build_has_a_dockerfile() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    wanted = {f"services/{name}/Dockerfile" for name in (*GRPC_SERVICES, "soap-edge")}
    wanted |= {s["build"]["dockerfile"] for s in compose["services"].values() if "build" in s}
    missing = sorted(w for w in wanted if not (REPO / w).exists())
    assert not missing, f"Dockerfiles missing: {missing}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_hadolint_clean(path: Path, tool: Callable[[str], str]) -> None:
    result = run([tool("hadolint"), "--no-color", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_image_rules(path: Path) -> None:
    lines = [
        line.strip()
        for line in path.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines
    stages = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage: build tools stay out of the final image"
    assert all("${BASE_IMAGE}" in line for line in stages)
    final = lines[lines.index(stages[-1]) :]
    users = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage must switch to a non-root USER"
    assert not re.match(r"^(0|root)(:|$)", users[-1]), users[-1]
    assert any(line.upper().startswith("HEALTHCHECK ") for line in final)
    assert any(line.upper().startswith("ENTRYPOINT ") for line in final)
