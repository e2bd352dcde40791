"""Structured mutations of valid ITI-47/55/38/39 requests, and the transaction parsers directly.

Through the app: a mutated request still gets a SOAP answer, never a stack trace; business
problems stay in the body (HTTP 200 RegistryError / HL7 AE), so a 5xx here is a bug.
Directly: each parser returns or raises only its documented error type.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from soapfuzz_kit import (
    QUERY,
    TREE_OPS,
    XDSB,
    Mutation,
    SoapEdgeHarness,
    check_response,
    mutate_tree,
    serialise,
)

from soap_edge import iti38, iti39, iti47
from soap_edge.patient_ids import normalise_nhs_number, parse_cx
from soap_edge.soap.envelope import read_envelope
from soap_edge.soap.faults import SoapFault
from soap_edge.soap.wsa import check_must_understand, read_addressing

TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, codec="utf-8"),
    max_size=40,
)


def mutations(texts: list[str]) -> st.SearchStrategy[list[Mutation]]:
    one = st.tuples(
        st.sampled_from(TREE_OPS),
        st.integers(min_value=0, max_value=400),
        st.integers(min_value=0, max_value=400),
        st.one_of(st.sampled_from(texts), TEXT),
    )
    return st.lists(one, min_size=1, max_size=6)


def _seeds(harness: SoapEdgeHarness, prefix: tuple[str, ...]) -> list[object]:
    return [s for s in harness.seeds.items if s.name.startswith(prefix)]


def _fuzz_mutated(harness: SoapEdgeHarness, data: st.DataObject, prefix: tuple[str, ...]) -> None:
    vocab = harness.vocab
    seed = data.draw(st.sampled_from(_seeds(harness, prefix)))
    muts = data.draw(mutations(vocab[2]))
    tree = mutate_tree(seed.envelope_tree(), muts, vocab)  # type: ignore[attr-defined]
    path = data.draw(st.sampled_from([seed.path, "/xca"]))  # type: ignore[attr-defined]
    harness.exceptions.records.clear()
    verdict = check_response(harness.post(path, serialise(tree)))
    assert not harness.exceptions.records, [r.getMessage() for r in harness.exceptions.records]
    # A parsed and routed request never ends in a Receiver fault: problems go in the body.
    assert verdict.fault_code != "env:Receiver", muts


@given(data=st.data())
def test_mutated_pdq_and_xcpd_requests(harness: SoapEdgeHarness, data: st.DataObject) -> None:
    _fuzz_mutated(harness, data, ("iti47", "iti55"))


@given(data=st.data())
def test_mutated_cross_gateway_queries(harness: SoapEdgeHarness, data: st.DataObject) -> None:
    _fuzz_mutated(harness, data, ("iti38", "xca"))


@given(data=st.data())
def test_mutated_cross_gateway_retrieves(harness: SoapEdgeHarness, data: st.DataObject) -> None:
    _fuzz_mutated(harness, data, ("iti39",))


def test_every_seed_is_valid(harness: SoapEdgeHarness) -> None:
    """The mutation base really is valid: each seed gets a 200 non-fault answer."""
    for seed in harness.seeds.items:
        verdict = check_response(harness.post(seed.path, seed.envelope_bytes()))
        assert verdict.status == 200 and verdict.fault_code is None, seed.name


# ---- Parsers, in-process without the app (fast: many more inputs per second) ----
def _payload(harness: SoapEdgeHarness, data: st.DataObject, prefix: str) -> etree._Element:
    vocab = harness.vocab
    seed = data.draw(st.sampled_from(_seeds(harness, (prefix,))))
    tree = mutate_tree(seed.envelope_tree(), data.draw(mutations(vocab[2])), vocab)  # type: ignore[attr-defined]
    return tree


@given(data=st.data())
def test_envelope_and_addressing_readers_raise_only_soap_faults(
    harness: SoapEdgeHarness, data: st.DataObject
) -> None:
    tree = _payload(harness, data, "")
    try:
        env = read_envelope(tree)
        check_must_understand(env)
        read_addressing(env)
    except SoapFault:
        pass


def _body_root(tree: etree._Element) -> etree._Element | None:
    body = tree.find("{http://www.w3.org/2003/05/soap-envelope}Body")
    if body is None or len(body) == 0 or not isinstance(body[0].tag, str):
        return None
    return body[0]


@given(data=st.data())
def test_stored_query_parser_raises_only_query_errors(
    harness: SoapEdgeHarness, data: st.DataObject
) -> None:
    payload = _body_root(_payload(harness, data, "iti38"))
    if payload is None:
        return
    try:
        iti38.parse_request(payload)
    except iti38.QueryError as err:
        assert err.code.startswith("XDS"), err.code


@given(raw=st.text(max_size=80))
def test_slot_value_parser_raises_only_query_errors(raw: str) -> None:
    try:
        values = iti38.parse_value(raw)
    except iti38.QueryError:
        return
    assert all(isinstance(v, str) for v in values)


@given(data=st.data())
def test_retrieve_parser_never_raises(harness: SoapEdgeHarness, data: st.DataObject) -> None:
    payload = _body_root(_payload(harness, data, "iti39"))
    if payload is not None:
        for req in iti39.parse_requests(payload):
            assert isinstance(req.unique_id, str)


@given(data=st.data())
def test_pdq_parser_raises_only_query_problems(
    harness: SoapEdgeHarness, data: st.DataObject
) -> None:
    payload = _body_root(_payload(harness, data, "iti47"))
    if payload is None:
        return
    try:
        iti47.parse_query(payload)
    except iti47.QueryProblem as problem:
        assert problem.outcome.ack == "AE"


@given(value=st.text(max_size=60))
def test_patient_id_parsers_never_raise(value: str) -> None:
    cx = parse_cx(value)
    assert cx is None or (cx.id and cx.authority)
    nhs = normalise_nhs_number(value)
    assert nhs is None or (len(nhs) == 10 and nhs.isdigit())


@pytest.mark.parametrize(
    "root",
    [f"{{{QUERY}}}AdhocQueryRequest", f"{{{XDSB}}}RetrieveDocumentSetRequest"],
)
def test_empty_bodies_are_business_errors(harness: SoapEdgeHarness, root: str) -> None:
    """Edge case the mutators reach only rarely: a bare body root of each XDS transaction."""
    seed = next(s for s in harness.seeds.items if s.body.tag == root)
    tree = seed.envelope_tree()
    payload = _body_root(tree)
    assert payload is not None
    for child in list(payload):
        payload.remove(child)
    verdict = check_response(harness.post(seed.path, serialise(tree)))
    assert verdict.status == 200
    assert verdict.root.xpath("//*[local-name()='RegistryError']"), etree.tostring(verdict.root)
