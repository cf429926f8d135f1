"""Path templates, the route table built from the descriptors, and the Envoy routes generated
from it (no I/O: tests/integration runs them in a real Envoy)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from google.api import http_pb2

from services.gateway.descriptors import Rpc, load_catalog
from services.gateway.envoy_routes import EDGE_HEADER, RouteFiles, RouteTimeouts, route_config
from services.gateway.path_template import TemplateError, compile_template
from services.gateway.routes import build_route_table

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


def test_a_binding_to_an_unknown_field_fails_at_start_up() -> None:
    rule = http_pb2.HttpRule(get="/v1/accounts/{no_such_field}")
    with pytest.raises(ValueError, match="no_such_field"):
        build_route_table([dataclasses.replace(rpc("GetBalance"), http_rules=(rule,))])


def test_additional_bindings_add_routes() -> None:
    rule = http_pb2.HttpRule(get="/v1/accounts/{account_id}/balance")
    rule.additional_bindings.add(get="/v2/balances/{account_id}")
    rule.additional_bindings.add(post="/v2/balances:query", body="*")
    with_more = dataclasses.replace(rpc("GetBalance"), http_rules=(rule, *rule.additional_bindings))
    table = build_route_table([with_more])
    assert {b.route_label for b in table.bindings} == {
        "GET /v1/accounts/{account_id}/balance", "GET /v2/balances/{account_id}",
        "POST /v2/balances:query"}
    assert table.bindings[0].path.verb == "query"  # custom verbs first (most specific)


def test_the_idempotency_key_field_is_known() -> None:
    by_name = {b.rpc.method.name: b for b in TABLE.bindings}
    assert by_name["CreateTransfer"].idempotency_key_field == "idempotency_key"
    assert by_name["GetBalance"].idempotency_key_field is None


ROUTES = route_config(TABLE, RouteFiles(openapi=Path("/o.json"), docs=Path("/d.html")),
                      RouteTimeouts(grpc_deadline_s=5.0, route_timeout_s=6.0))
VHOST_ROUTES = ROUTES["virtual_hosts"][0]["routes"]


def upstream_routes() -> list[dict[str, object]]:
    return [r for r in VHOST_ROUTES if "route" in r]


def test_one_upstream_route_per_binding_and_none_for_internal_rpcs() -> None:
    names = {str(r["name"]).split(" (")[0] for r in upstream_routes()}
    assert names == {f"{b.rpc.service.name}.{b.rpc.method.name} {b.route_label}"
                     for b in TABLE.bindings}
    assert not any("ValidateSession" in str(r["name"]) for r in VHOST_ROUTES)


def test_route_regexes_match_what_the_templates_match() -> None:
    balance = next(r for r in upstream_routes() if "GetBalance" in str(r["name"]))
    regex = re.compile(balance["match"]["safe_regex"]["regex"])  # type: ignore[index]
    assert regex.fullmatch("/v1/accounts/a%2Fb/balance")
    assert not regex.fullmatch("/v1/accounts/a/b/balance")
    assert balance["route"]["cluster"] == "account"  # type: ignore[index]


def test_only_side_effect_free_rpcs_are_retried_on_unavailable() -> None:
    retry = {str(r["name"]).split(" ")[0]: r["route"]["retry_policy"]["retry_on"]  # type: ignore[index]
             for r in upstream_routes()}
    assert "unavailable" in retry["AccountService.GetBalance"]
    assert "unavailable" not in retry["TransferService.CreateTransfer"]
    assert "unavailable" not in retry["AuthService.Login"]
    assert all("reset-before-request" in value for value in retry.values())


def test_every_forwarded_request_is_marked_as_from_the_edge_and_given_a_deadline() -> None:
    (edge,) = ROUTES["request_headers_to_add"]
    assert edge == {"header": {"key": EDGE_HEADER, "value": "1"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    for route in upstream_routes():
        (deadline,) = route["request_headers_to_add"]  # type: ignore[misc]
        assert deadline["header"] == {"key": "grpc-timeout", "value": "5000m"}


def test_the_last_route_answers_404_for_everything_else() -> None:
    last = VHOST_ROUTES[-1]
    assert last["match"] == {"prefix": "/"} and last["direct_response"]["status"] == 404
