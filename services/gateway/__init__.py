"""The HTTP gateway: REST/JSON routes generated from the protos' `google.api.http` annotations,
transcoded to gRPC calls on the account, transfer and auth services.

    path_template   google.api.http path templates -> compiled matchers
    descriptors     which RPCs exist, their HTTP rules and access options
    routes          the route table built once at start-up
    transcoding     HTTP request -> request message, reply message -> JSON
    errors          gRPC status -> HTTP status, google.rpc.Status bodies
    session_gate    one Redis round trip: session check + rate limit + read-your-writes version
    (the pipelined Redis client and the rate-limit policy now live in shared/)
    rate_limit      rate-limit decisions, headers, and the in-memory fallback limiter
    upstreams       grpc.aio channels (round robin, deadlines, retries for idempotent RPCs)
    openapi         the OpenAPI 3 document and the docs page
    http_app        the ASGI app (Starlette) that ties these together
    bootstrap       builds everything from Settings; runs uvicorn in-process for tests
"""
