"""The client's exceptions: one class per gRPC status the services use (the server's domain
errors map to these statuses one to one), all under BankClientError.

    BankClientError                 .code (grpc.StatusCode), .message
    ├── InvalidArgument             bad input
    ├── NotFound                    no such entity, or not yours (the two look the same)
    ├── AlreadyExists
    ├── PermissionDenied
    ├── Unauthenticated             no session, or it expired or was revoked: log in again
    ├── FailedPrecondition          e.g. insufficient funds
    ├── Aborted                     e.g. the same idempotency key is in flight: retry later
    ├── RateLimited                 RESOURCE_EXHAUSTED
    ├── Unavailable                 after the automatic retries of side-effect-free methods
    └── DeadlineExceeded
"""

from __future__ import annotations

import grpc


class BankClientError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(BankClientError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(BankClientError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(BankClientError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(BankClientError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(BankClientError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(BankClientError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(BankClientError):
    code = grpc.StatusCode.ABORTED


class RateLimited(BankClientError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(BankClientError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(BankClientError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE: dict[grpc.StatusCode, type[BankClientError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, AlreadyExists, PermissionDenied,
                              Unauthenticated, FailedPrecondition, Aborted, RateLimited,
                              Unavailable, DeadlineExceeded)
}


def from_rpc_error(error: grpc.RpcError) -> BankClientError:
    """The exception for a failed call (sync grpc.RpcError or grpc.aio.AioRpcError)."""
    code: grpc.StatusCode = error.code()
    details: str = error.details() or code.name
    return _BY_CODE.get(code, BankClientError)(details, code)
