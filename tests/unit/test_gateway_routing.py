"""Path templates, the route table built from descriptors, and request transcoding (no I/O)."""

from __future__ import annotations

import dataclasses

import pytest
from bank.v1 import account_pb2, transfer_pb2
from google.api import http_pb2

from services.gateway.descriptors import Rpc, load_catalog
from services.gateway.errors import HttpError
from services.gateway.path_template import TemplateError, compile_template
from services.gateway.routes import RouteTable, build_route_table
from services.gateway.transcoding import build_request, reply_json

CATALOG = load_catalog()
TABLE = build_route_table(CATALOG.rpcs)


def rpc(name: str) -> Rpc:
    return next(r for r in CATALOG.rpcs if r.full_method.endswith("/" + name))


@pytest.mark.parametrize(("template", "path", "expected"), [
    ("/v1/accounts/{account_id}", "/v1/accounts/abc", {"account_id": "abc"}),
    ("/v1/accounts/{account_id}", "/v1/accounts/a%2Fb", {"account_id": "a/b"}),
    ("/v1/accounts/{account_id}", "/v1/accounts/abc/balance", None),
    ("/v1/accounts/{account_id}/transactions:recent", "/v1/accounts/x/transactions:recent",
     {"account_id": "x"}),
    ("/v1/accounts/{account_id}/transactions:recent", "/v1/accounts/x/transactions", None),
    ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2", {"name": "shelves/1/books/2"}),
    ("/v1/{name=shelves/*}:undelete", "/v1/shelves/7:undelete", {"name": "shelves/7"}),
    ("/v1/files/{path=**}", "/v1/files/a/b/c.txt", {"path": "a/b/c.txt"}),
    ("/v1/{parent.id}/items", "/v1/p1/items", {"parent.id": "p1"}),
])
def test_path_templates(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_template(template).match(path) == expected


@pytest.mark.parametrize("bad", ["v1/x", "/v1/{}", "/v1/{a}/{a}", "/v1/{a", "/v1//x",
                                 "/v1/{a=b{c}}"])
def test_bad_templates_fail_at_start_up(bad: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(bad)


def test_every_annotated_rpc_has_a_route_and_internal_ones_none() -> None:
    labels = {b.route_label for b in TABLE.bindings}
    assert "GET /v1/accounts/{account_id}/balance" in labels
    assert "POST /v1/transfers" in labels
    assert not any(b.rpc.method.name == "ValidateSession" for b in TABLE.bindings)
    annotated = [r for r in CATALOG.rpcs if r.http_rules and not r.internal]
    assert len(TABLE.bindings) == sum(len(r.http_rules) for r in annotated)
    public = {b.rpc.method.name for b in TABLE.bindings if b.public}
    assert public == {"Register", "Login"}


def test_an_internal_rpc_stays_hidden_even_with_an_annotation() -> None:
    rule = http_pb2.HttpRule(get="/v1/sessions/validate")
    hidden = dataclasses.replace(rpc("ValidateSession"), http_rules=(rule,))
    assert build_route_table([hidden]).bindings == []


def test_additional_bindings_add_routes() -> None:
    rule = http_pb2.HttpRule(get="/v1/accounts/{account_id}/balance")
    rule.additional_bindings.add(get="/v2/balances/{account_id}")
    rule.additional_bindings.add(post="/v2/balances:query", body="*")
    with_more = dataclasses.replace(rpc("GetBalance"), http_rules=(rule, *rule.additional_bindings))
    table = RouteTable(build_route_table([with_more]).bindings)
    binding, params = table.match("GET", "/v2/balances/acc-7")
    assert params == {"account_id": "acc-7"} and binding.rpc.method.name == "GetBalance"
    binding, _ = table.match("POST", "/v2/balances:query")
    request = build_request(binding, {}, b"", b'{"accountId": "a", "minVersion": "3"}')
    assert request == account_pb2.GetBalanceRequest(account_id="a", min_version=3)


def test_a_binding_to_an_unknown_field_fails_at_start_up() -> None:
    rule = http_pb2.HttpRule(get="/v1/accounts/{no_such_field}")
    with pytest.raises(ValueError, match="no_such_field"):
        build_route_table([dataclasses.replace(rpc("GetBalance"), http_rules=(rule,))])


def test_unknown_path_is_404_and_wrong_method_405() -> None:
    with pytest.raises(HttpError) as missing:
        TABLE.match("GET", "/v1/nothing")
    assert missing.value.http_status == 404
    with pytest.raises(HttpError) as wrong:
        TABLE.match("DELETE", "/v1/transfers")
    assert wrong.value.http_status == 405
    assert dict(wrong.value.headers)[b"allow"] == b"GET, POST"


def test_routes_know_read_your_writes_and_idempotency() -> None:
    by_name = {b.rpc.method.name: b for b in TABLE.bindings}
    assert by_name["GetBalance"].read_your_writes and by_name["ListRecentTransactions"]\
        .read_your_writes
    assert not by_name["ListTransactions"].read_your_writes
    assert by_name["CreateTransfer"].records_write and not by_name["GetTransfer"].records_write
    assert by_name["CreateTransfer"].idempotency_key_field == "idempotency_key"
    assert by_name["GetBalance"].simple_path


def test_query_parameters_in_both_spellings_and_path_wins_over_body() -> None:
    binding, params = TABLE.match("GET", "/v1/accounts/acc/transactions")
    request = build_request(binding, params, b"pageSize=5&page_token=abc", b"")
    assert request == account_pb2.ListTransactionsRequest(account_id="acc", page_size=5,
                                                          page_token="abc")


@pytest.mark.parametrize(("query", "body"), [
    (b"nope=1", b""), (b"pageSize=1&pageSize=2", b""), (b"pageSize=x", b""),
    (b"pageSize=99999999999", b""), (b"page_token=%ff", b""),
])
def test_bad_queries_are_400(query: bytes, body: bytes) -> None:
    binding, params = TABLE.match("GET", "/v1/accounts/acc/transactions")
    with pytest.raises(HttpError) as error:
        build_request(binding, params, query, body)
    assert error.value.http_status == 400


@pytest.mark.parametrize("body", [
    b"{", b"[]", b"null", b"1", b'{"unknown": 1}', b'{"amount": {"minorUnits": 1.5}}',
    b'{"amount": {"minorUnits": "1e400"}}', b'{"fromAccountId": 5}', b"\xff",
])
def test_bad_bodies_are_400(body: bytes) -> None:
    binding, params = TABLE.match("POST", "/v1/transfers")
    with pytest.raises(HttpError) as error:
        build_request(binding, params, b"", body)
    assert error.value.http_status == 400


def test_body_accepts_json_and_proto_field_names_and_int64_strings() -> None:
    binding, params = TABLE.match("POST", "/v1/transfers")
    request = build_request(binding, params, b"",
                            b'{"from_account_id": "a", "toAccountId": "b",'
                            b' "amount": {"minorUnits": "9007199254740993", "currency": "EUR"}}')
    assert request.amount.minor_units == 9_007_199_254_740_993  # beyond a double's precision


def test_replies_follow_the_proto3_json_mapping() -> None:
    binding, _ = TABLE.match("POST", "/v1/transfers")
    reply = transfer_pb2.Transfer(transfer_id="t", status=transfer_pb2.TRANSFER_STATUS_COMPLETED,
                                  source_balance=account_pb2.Balance(version=2**40))
    document = reply_json(binding, reply)
    assert b'"status":"TRANSFER_STATUS_COMPLETED"' in document
    assert b'"version":"1099511627776"' in document
    assert b'"description":""' in document  # fields are always present, defaults included
