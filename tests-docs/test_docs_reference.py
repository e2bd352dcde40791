"""Generated reference pages are up to date, and the generators read what they claim to read."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def test_committed_reference_pages_match_the_code(gen_docs: ModuleType) -> None:
    problems = gen_docs.stale(gen_docs.generate())
    assert not problems, (
        "docs/reference/ is stale; run `make docs` (scripts/gen_docs.py) and commit:\n"
        + "\n".join(problems)
    )


def test_check_mode_reports_a_stale_page(gen_docs: ModuleType, tmp_path: Path) -> None:
    pages = gen_docs.generate()
    target = next(iter(pages))
    changed = {**pages, target: pages[target] + "\nedited by hand\n"}
    assert gen_docs.stale(changed) == [f"out of date: {target.relative_to(REPO)}"]


def test_proto_parser_reads_comments_nesting_maps_and_streams(gen_docs: ModuleType) -> None:
    source = """
syntax = "proto3";

// Detached comment, not documentation.

// The package.
package demo.v1;

import "other.proto";

// Does things.
service Demo {
  // Unary call.
  rpc Get(GetRequest) returns (GetResponse);
  rpc Watch(stream GetRequest) returns (stream GetResponse) {} // Streams both ways.
}

// A request.
message GetRequest {
  // The id.
  string id = 1;
  map<string, int32> counts = 2; // Per kind.
  oneof choice {
    // By name.
    string name = 3;
  }
  // Nested type.
  message Inner {
    repeated Kind kinds = 1 [deprecated = true];
  }
  // Kinds.
  enum Kind {
    // Unset.
    KIND_UNSPECIFIED = 0;
  }
  reserved 9;
}
message GetResponse {}
"""
    parsed = gen_docs.parse_proto(source, "demo.proto")
    assert parsed.package == "demo.v1"
    assert parsed.doc == "The package."
    assert parsed.imports == ["other.proto"]
    (svc,) = parsed.services
    assert (svc.name, svc.doc) == ("Demo", "Does things.")
    assert [(r.name, r.doc, r.client_stream, r.server_stream) for r in svc.rpcs] == [
        ("Get", "Unary call.", False, False),
        ("Watch", "Streams both ways.", True, True),
    ]
    by_name = {m.name: m for m in parsed.messages}
    assert set(by_name) == {"GetRequest", "GetRequest.Inner", "GetRequest.Kind", "GetResponse"}
    fields = {f.name: f for f in by_name["GetRequest"].fields}
    assert (fields["id"].type, fields["id"].doc) == ("string", "The id.")
    assert (fields["counts"].type, fields["counts"].doc) == ("map<string, int32>", "Per kind.")
    assert (fields["name"].label, fields["name"].doc) == ("oneof choice", "By name.")
    assert by_name["GetRequest.Inner"].fields[0].label == "repeated"
    assert by_name["GetRequest.Kind"].kind == "enum"
    assert by_name["GetRequest.Kind"].fields[0].doc == "Unset."


def test_every_proto_element_is_in_the_grpc_reference(gen_docs: ModuleType) -> None:
    pages = {p.name: p.read_text() for p in (REPO / "docs" / "reference" / "grpc").glob("*.md")}
    for proto in sorted((REPO / "protos").rglob("*.proto")):
        parsed = gen_docs.parse_proto(proto.read_text(), str(proto))
        page = pages[f"{parsed.package}.md"]
        for svc in parsed.services:
            assert f"### {svc.name} " in page
            for rpc in svc.rpcs:
                assert f"`{rpc.name}`" in page, f"{parsed.package}.{svc.name}.{rpc.name}"
        for msg in parsed.messages:
            assert f"### {msg.name} " in page
            for field in msg.fields:
                assert f"| `{field.name}` |" in page, f"{parsed.package}.{msg.name}.{field.name}"
                assert field.doc, f"{proto}: {msg.name}.{field.name} has no comment"


def test_every_setting_and_its_env_var_is_in_the_configuration_reference(
    gen_docs: ModuleType,
) -> None:
    page = (REPO / "docs" / "reference" / "configuration.md").read_text()
    documented = 0
    for src in gen_docs.SETTINGS:
        try:
            cls = getattr(importlib.import_module(src.module), src.cls)
        except (ImportError, AttributeError):
            assert f"`{src.module}.{src.cls}` does not exist yet" in page
            continue
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            assert f"| `{name}` |" in page
            for env in gen_docs.env_names(name, info, prefix):
                assert f"`{env}`" in page
            documented += 1
    assert documented > 50


def test_error_mapping_covers_every_failure_kind(repo: Path) -> None:
    backends = importlib.import_module("soap_edge.backends")
    page = (repo / "docs" / "reference" / "error-mapping.md").read_text()
    for kind in backends.FailureKind:
        assert re.search(rf"^\| `{kind.value}` \|", page, re.M), kind
