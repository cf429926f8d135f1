"""The generator's policies without running Envoy: the OpenAPI document, local replies, the
transcoder's descriptor set, upstream specs, and the one set of Envoy flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from services.gateway.descriptor_set import comparable, transcoder_descriptor_set
from services.gateway.descriptors import default_descriptor_set, load_catalog
from services.gateway.envoy_binary import envoy_args
from services.gateway.envoy_clusters import Upstream, cluster_name
from services.gateway.local_replies import LOCAL_REPLY_CODES, local_reply_config
from services.gateway.openapi import build_openapi, docs_page
from services.gateway.routes import build_route_table


def test_openapi_document_covers_routes_schemas_and_security() -> None:
    catalog = load_catalog()
    document = build_openapi(build_route_table(catalog.rpcs), catalog.comments)
    assert document["openapi"].startswith("3.")
    assert "Unknown fields in a request body are ignored" in document["info"]["description"]
    balance = document["paths"]["/v1/accounts/{account_id}/balance"]["get"]
    assert balance["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/bank.v1.Balance"}
    assert {p["name"] for p in balance["parameters"]} == {"account_id", "minVersion"}
    assert "security" not in balance  # the global bearer requirement applies
    transfer = document["paths"]["/v1/transfers"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header"
               for p in transfer["parameters"])
    assert document["paths"]["/v1/auth/login"]["post"]["security"] == []
    schemas = document["components"]["schemas"]
    assert schemas["bank.v1.Money"]["properties"]["minorUnits"]["type"] == "string"
    assert schemas["bank.v1.ReadSource"]["enum"][1] == "READ_SOURCE_CACHE"
    assert set(schemas["Status"]["required"]) == {"code", "message", "details"}
    assert "Cache-aside" in balance["summary"]  # proto comments become descriptions
    assert "/v1/transfers" in docs_page(document)


def test_every_local_error_is_a_status_body() -> None:
    config = local_reply_config()
    assert "body_format" not in config  # 200 direct responses (/openapi.json) keep their body
    by_status = {m["filter"]["status_code_filter"]["comparison"]["value"]["default_value"]: m
                 for m in config["mappers"][:-1]}
    for status, code in LOCAL_REPLY_CODES.items():
        body = by_status[status]["body_format_override"]["json_format"]
        assert body["code"] == code and body["details"] == []
    # 5xx texts are fixed: Envoy's own would describe connections.
    assert by_status[503]["body_format_override"]["json_format"]["message"].startswith(
        "the service is temporarily unavailable")
    last = config["mappers"][-1]["filter"]["status_code_filter"]["comparison"]
    assert (last["op"], last["value"]["default_value"]) == ("GE", 400)


def test_the_transcoder_knows_the_error_detail_types() -> None:
    files = {f.name: f for f in transcoder_descriptor_set().file}
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto",
            "google/protobuf/any.proto", "google/protobuf/duration.proto",
            "bank/v1/account.proto"} <= set(files)
    assert not any(f.HasField("source_code_info") for f in files.values())
    names = list(files)
    for name, file in files.items():  # each file after its imports
        assert all(names.index(dep) < names.index(name) for dep in file.dependency)


def test_descriptor_sets_compare_by_meaning() -> None:
    original = default_descriptor_set().read_bytes()
    stripped = descriptor_pb2.FileDescriptorSet.FromString(original)
    for file in stripped.file:
        file.ClearField("source_code_info")
    assert comparable(original) == comparable(stripped.SerializeToString())
    stripped.file[0].package = "changed"
    assert comparable(original) != comparable(stripped.SerializeToString())


def test_upstreams_and_cluster_names() -> None:
    upstream = Upstream.parse("account=127.0.0.1:7051,127.0.0.1:7061")
    assert upstream == Upstream("account", (("127.0.0.1", 7051), ("127.0.0.1", 7061)))
    assert cluster_name("bank.v1.AccountService") == "account"
    assert cluster_name("bank.v1.LoanOfficeService") == "loan_office"
    for bad in ("account", "account=", "account=host", "account=host:port"):
        with pytest.raises(ValueError):
            Upstream.parse(bad)


def test_envoy_runs_with_explicit_concurrency_everywhere() -> None:
    args = envoy_args(Path("/etc/envoy/gateway/envoy.json"), concurrency=2)
    assert args[:2] == ["-c", "/etc/envoy/gateway/envoy.json"]
    assert args[args.index("--concurrency") + 1] == "2"
    assert "--disable-hot-restart" in args
