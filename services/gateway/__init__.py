"""The gateway's configuration: Envoy transcodes REST/JSON to gRPC, and this package generates
what Envoy runs on from the compiled descriptors and the settings. No Python serves requests.

    descriptors      which RPCs exist, their google.api.http rules and access options
    path_template    google.api.http path templates -> regular expressions
    routes           the route table: one binding per HTTP rule of every exposed RPC
    openapi          the OpenAPI 3 document and the /docs page, from the same table
    descriptor_set   the transcoder's descriptor set (the bank's protos + google.rpc errors)
    envoy_routes     the allow-list of Envoy routes (one per binding, 404 / 405 / 415 answers)
    envoy_clusters   one upstream cluster per service (HTTP/2, round robin, health checks)
    local_replies    Envoy's own answers as google.rpc.Status JSON, and the security headers
    envoy_config     the bootstrap: TLS listener, transcoder, routes, clusters, overload limits
    bundle           envoy.json + descriptors.pb + openapi.json + docs.html in one folder
    deployments      the committed bundles of docker-compose.yml and deploy/k8s
    certs            a self-signed certificate for a local gateway
    envoy_binary     the Envoy binary, the one set of flags it runs with, --mode validate
    envoy_process    Envoy as a child process, waited on through its admin interface
"""
