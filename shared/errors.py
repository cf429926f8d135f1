"""The domain error hierarchy. Each class knows its gRPC status; the gateway maps that status to
HTTP with the standard table. Messages are shown to clients, so they name the problem and never
carry another user's data.

    BankError
    ├── InvalidArgument      INVALID_ARGUMENT     400
    ├── NotFound             NOT_FOUND            404
    ├── AlreadyExists        ALREADY_EXISTS       409
    ├── PermissionDenied     PERMISSION_DENIED    403
    ├── Unauthenticated      UNAUTHENTICATED      401
    ├── FailedPrecondition   FAILED_PRECONDITION  400
    ├── Aborted              ABORTED              409  (retry later, e.g. request in progress)
    ├── ResourceExhausted    RESOURCE_EXHAUSTED   429  (carries retry_after_s)
    └── Unavailable          UNAVAILABLE          503
"""

from __future__ import annotations

import grpc


class BankError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(BankError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(BankError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(BankError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(BankError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(BankError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(BankError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(BankError):
    code = grpc.StatusCode.ABORTED


class ResourceExhausted(BankError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(BankError):
    code = grpc.StatusCode.UNAVAILABLE
