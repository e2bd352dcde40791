"""deploy/elk: the services' real log lines satisfy what the pipeline, the index template and
the Kibana objects rely on."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

from deploy_logs import OPTIONAL_FIELDS, REQUIRED_FIELDS, TRACE_FIELDS, check_ecs_line
from deploy_tools import DEPLOY
from opentelemetry.sdk.trace import TracerProvider

from xcagw_common.logging import EcsJsonFormatter, correlation_id_var, partner_id_var, pseudonymise

ELK = DEPLOY / "elk"
PIPELINE = ELK / "logstash" / "pipeline" / "xcagw.conf"


def _capture(emit: object) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EcsJsonFormatter("pds-adapter"))
    logger = logging.getLogger("xcagw.tests.elk")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    assert callable(emit)
    emit(logger)
    return stream.getvalue().splitlines()


def test_formatter_lines_carry_the_ecs_fields_in_and_out_of_spans() -> None:
    tracer = TracerProvider().get_tracer("t")

    def emit(logger: logging.Logger) -> None:
        logger.info("started")
        token_c = correlation_id_var.set("urn:uuid:6b1c3c6e-1c1b-4d5e-8f00-0a1b2c3d4e5f")
        token_p = partner_id_var.set("partner-a")
        try:
            with tracer.start_as_current_span("GetPatient"):
                logger.warning("patient %s not found", pseudonymise("9000000009"))
                try:
                    raise ValueError("upstream said no")
                except ValueError:
                    logger.exception("failed")
        finally:
            correlation_id_var.reset(token_c)
            partner_id_var.reset(token_p)

    outside, warning, error = _capture(emit)
    assert check_ecs_line(outside) == []
    assert check_ecs_line(warning, in_span=True) == []
    assert check_ecs_line(error, in_span=True) == []
    doc = json.loads(warning)
    assert doc["labels.correlation_id"].startswith("urn:uuid:")
    assert doc["labels.partner_id"] == "partner-a"
    assert "9000000009" not in warning
    assert json.loads(error)["error.type"] == "ValueError"


def test_checker_rejects_what_the_pipeline_cannot_use() -> None:
    assert check_ecs_line("Traceback (most recent call last):") == ["not JSON: Expecting value"]
    bad = json.dumps({"message": "x", "log.level": "INFO", "patient": "943 476 5919"})
    problems = check_ecs_line(bad, in_span=True)
    assert "missing service.name" in problems
    assert "missing trace.id" in problems
    assert any("log.level" in p for p in problems)
    assert any("patient holds a 10-digit number" in p for p in problems)


def _template_paths() -> set[str]:
    template = json.loads((ELK / "elasticsearch" / "index-template.json").read_text())
    paths: set[str] = set()

    def walk(props: dict[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            assert isinstance(spec, dict)
            path = f"{prefix}{name}"
            if "properties" in spec:
                walk(spec["properties"], path + ".")
            else:
                paths.add(path)

    walk(template["template"]["mappings"]["properties"], "")
    return paths


def test_index_template_maps_every_field_the_services_and_pipeline_use() -> None:
    mapped = _template_paths()
    for field in (
        *REQUIRED_FIELDS,
        *TRACE_FIELDS,
        *OPTIONAL_FIELDS,
        "error.type",
        "error.stack_trace",
    ):
        assert field in mapped, f"{field} is not mapped in index-template.json"
    # Fields the Logstash pipeline reads or writes as [dotted.name] references.
    referenced = set(re.findall(r"\[([a-z_@][a-z_.@]*)\]", PIPELINE.read_text()))
    referenced |= set(re.findall(r'"([a-z]+\.[a-z_.]+)"\s*(?:,|=>)', PIPELINE.read_text()))
    assert {"service.name", "log.level", "trace.id", "event.dataset"} <= referenced
    assert referenced - {"message"} <= mapped | {"message"}


def test_index_template_targets_the_pipeline_data_stream() -> None:
    template = json.loads((ELK / "elasticsearch" / "index-template.json").read_text())
    pipeline = PIPELINE.read_text()
    assert 'data_stream_type => "logs"' in pipeline
    assert 'data_stream_dataset => "xcagw"' in pipeline
    assert template["index_patterns"] == ["logs-xcagw-*"]
    assert "data_stream" in template
    ilm = json.loads((ELK / "elasticsearch" / "ilm-policy.json").read_text())
    assert template["template"]["settings"]["index.lifecycle.name"] == "xcagw-logs"
    assert ilm["policy"]["phases"]["delete"]["actions"] == {"delete": {}}
    assert "xcagw-logs" in (ELK / "setup.sh").read_text()


def test_kibana_saved_objects_reference_existing_objects_and_mapped_fields() -> None:
    objects = [
        json.loads(line)
        for line in (ELK / "kibana" / "saved-objects.ndjson").read_text().splitlines()
        if line.strip()
    ]
    ids = {o["id"] for o in objects}
    mapped = _template_paths()
    assert any(
        o["type"] == "index-pattern" and o["attributes"]["title"] == "logs-xcagw-*" for o in objects
    )
    for obj in objects:
        for ref in obj["references"]:
            assert ref["id"] in ids
        for column in obj["attributes"].get("columns", []):
            assert column in mapped, f"{obj['id']}: column {column} is not mapped"
        search = obj["attributes"].get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
        if search:
            json.loads(search)
