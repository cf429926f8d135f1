"""One server interceptor instead of a stack of them: every extra layer costs CPU on each call,
and the hot path (a cached balance read) is only a few hundred microseconds of work.

Per call: the request id, the request gate (session + per-user limit + read-your-writes floor in
one Redis call, shared/request_gate.py) for methods that need a session, the per-address limit
for public methods called through the edge, error mapping (each BankError knows its status) and
metrics. The floor raises the request's `min_version` for methods that have one.

A method may register a prefetch: a cache read that does not depend on the session check is sent
in the same event-loop tick as the gate's script, so both round trips overlap. The handler only
runs once the gate admitted the call; a refused call's prefetched read is dropped unread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
from google.protobuf import any_pb2, descriptor_pool, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from shared.auth_context import MachineCaller, set_caller, set_machine
from shared.call_metadata import CallHeaders, set_call_headers
from shared.errors import BankError, PermissionDenied, ResourceExhausted, Unauthenticated
from shared.identifiers import canonical_uuid
from shared.logging import new_request_id, request_id_var
from shared.machine_credentials import MachineCredentials, is_machine_token
from shared.metrics import GRPC_LATENCY, GRPC_REQUESTS
from shared.rate_limit import RateLimited
from shared.request_gate import RequestGate
from shared.text_rules import check_message_text

log = logging.getLogger(__name__)

# Called with the deserialized request before the gate's answer; must not raise or block.
Prefetch = Callable[[Any], None]
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclass(frozen=True)
class MethodPolicy:
    needs_session: bool
    public: bool
    has_floor: bool  # the request has account_id and min_version (read-your-writes)
    # The scope a machine credential needs; set: the RPC acts for no user (sessions refused).
    machine_scope: str = ""


def method_policy(full_method: str) -> MethodPolicy:
    """From the compiled descriptors: bank.* methods need a session unless marked public."""
    from bank.v1 import options_pb2  # generated; imported lazily so shared/ imports without it

    if not full_method.startswith("/bank."):
        return MethodPolicy(False, False, False)
    _, service, method = full_method.split("/")
    try:
        desc = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    except KeyError:
        return MethodPolicy(True, False, False)
    # The stubs type extensions too narrowly: Any.
    public_option: Any = options_pb2.public
    scope_option: Any = options_pb2.machine_scope
    options = desc.GetOptions()
    public = bool(options.Extensions[public_option])
    scope = str(options.Extensions[scope_option])
    if scope:
        return MethodPolicy(False, False, False, scope)
    fields = desc.input_type.fields_by_name
    return MethodPolicy(not public, public, "account_id" in fields and "min_version" in fields)


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, service: str, gate: RequestGate | None,
                 prefetch: Mapping[str, Prefetch] | None = None,
                 machines: MachineCredentials | None = None) -> None:
        """`gate=None` serves without sessions (only for servers that expose no bank method);
        `machines` checks machine credentials, for the RPCs that name a machine scope."""
        self._service = service
        self._gate = gate
        self._machines = machines
        self._prefetch = dict(prefetch or {})
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming RPCs are health/reflection only
        # Built once per method and reused: a fresh handler per call cost ~30-40 us of CPU.
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, inner: Handler) -> Handler:
        policy = method_policy(method)
        gate = self._gate
        machines = self._machines
        if policy.needs_session and gate is None:
            raise RuntimeError(f"{method} needs a session but this server has no request gate")
        if policy.machine_scope and machines is None:
            raise RuntimeError(f"{method} needs a machine credential check on this server")
        prefetch = self._prefetch.get(method)
        short_method = method.rsplit("/", 1)[-1]
        latency = GRPC_LATENCY.labels(self._service, short_method)
        # Most calls succeed: their counter child is resolved once, not hashed per call.
        succeeded = GRPC_REQUESTS.labels(self._service, short_method, grpc.StatusCode.OK.name)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            headers = CallHeaders.parse(context.invocation_metadata())
            request_id = headers.request_id or new_request_id()
            request_id_var.set(request_id)
            set_call_headers(headers)
            set_caller(None)
            set_machine(None)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                check_message_text(request)  # no control characters in any text field
                if policy.machine_scope:
                    assert machines is not None
                    set_machine(await _machine_caller(machines, headers, policy.machine_scope))
                elif policy.needs_session:
                    assert gate is not None
                    token = headers.bearer_token()
                    if token is None:
                        raise Unauthenticated(
                            "this call needs a session: send 'authorization: Bearer <token>'"
                        )
                    if is_machine_token(token):
                        raise PermissionDenied("machine credentials cannot act for a user: "
                                               "this call needs the user's session")
                    floor_of = (canonical_uuid(request.account_id) or ""
                                if policy.has_floor else "")
                    pending = gate.admit(token, count=headers.from_edge, account_id=floor_of,
                                         address=lambda: headers.client_group(
                                             context.peer() or ""))
                    if prefetch is not None:
                        _run_prefetch(prefetch, request)
                    admission = await pending
                    set_caller(admission.caller)
                    if admission.floor and admission.floor > request.min_version:
                        request.min_version = admission.floor  # only floors for has_floor
                elif policy.public and headers.from_edge and gate is not None:
                    await gate.admit_address(headers.client_group(context.peer() or ""))
                return await inner(request, context)
            except BankError as err:
                code = err.code
                trailers = _trailers_for(err)
                if trailers:
                    context.set_trailing_metadata(trailers)
                await context.abort(err.code, err.message)
            except Exception as err:
                if isinstance(err, grpc.aio.AbortError):
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                if is_data_error(err):
                    # PostgreSQL refused a value (out of range, malformed): the request's fault,
                    # whatever validation let it through.
                    code = grpc.StatusCode.INVALID_ARGUMENT
                    await context.abort(code, "a value in the request is out of range or "
                                              "malformed")
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", method)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
                )
            finally:
                latency.observe(time.perf_counter() - started)
                if code is grpc.StatusCode.OK:
                    succeeded.inc()
                else:
                    GRPC_REQUESTS.labels(self._service, short_method, code.name).inc()

        return wrapped


def is_data_error(err: BaseException) -> bool:
    """psycopg's DataError (SQLSTATE class 22), also when a database library wrapped it."""
    for candidate in (err, getattr(err, "orig", None), err.__cause__):
        if isinstance(candidate, psycopg.errors.DataError):
            return True
    return False


async def _machine_caller(machines: MachineCredentials, headers: CallHeaders,
                          scope: str) -> MachineCaller:
    token = headers.bearer_token()
    if token is None:
        raise Unauthenticated("this call needs a machine credential: send 'authorization: "
                              "Bearer mc1.<id>.<secret>'")
    if not is_machine_token(token):
        raise PermissionDenied(f"this call acts for no user: it needs a machine credential "
                               f"with the scope {scope}, not a session")
    machine = await machines.verify(token)
    if scope not in machine.scopes:
        raise PermissionDenied(f"machine credential {machine.name} lacks the scope {scope}")
    return machine


def _run_prefetch(prefetch: Prefetch, request: Any) -> None:
    try:
        prefetch(request)
    except Exception:  # an optimisation: the handler reads normally without it
        log.debug("prefetch failed", exc_info=True)


def _trailers_for(err: BankError) -> tuple[tuple[str, str | bytes], ...]:
    """Retry advice for RESOURCE_EXHAUSTED: Retry-After and the RateLimit headers (Envoy turns
    trailing metadata into response headers) and a google.rpc.RetryInfo detail."""
    if not isinstance(err, ResourceExhausted):
        return ()
    trailers: list[tuple[str, str | bytes]] = []
    if isinstance(err, RateLimited):
        trailers.extend(err.decision.headers())
    else:
        trailers.append(("retry-after", str(err.retry_after_s)))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=err.retry_after_s)))
    status = status_pb2.Status(code=err.code.value[0], message=err.message, details=[detail])
    trailers.append(("grpc-status-details-bin", status.SerializeToString()))
    return tuple(trailers)
