"""Thin gRPC servicer: proto in, use case, proto out. No SQL or Redis here."""

from __future__ import annotations

import grpc
from bank.v1 import auth_pb2, auth_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.auth.domain import LoginRequest, SessionInfo
from services.auth.service_layer import credentials, session_management
from services.auth.service_layer.ports import AuthDependencies
from shared.auth_context import current_caller
from shared.call_metadata import current_call_headers


def _timestamp(epoch_s: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(epoch_s * 1e9))
    return stamp


def _session_proto(info: SessionInfo, current_session_id: str) -> auth_pb2.Session:
    created, last_used = Timestamp(), Timestamp()
    created.FromDatetime(info.created_at)
    last_used.FromDatetime(info.last_used_at)
    return auth_pb2.Session(
        session_id=info.session_id, created_at=created, last_used_at=last_used,
        client_address=info.client_address, user_agent=info.user_agent,
        current=info.session_id == current_session_id,
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, deps: AuthDependencies) -> None:
        self._deps = deps

    async def Register(self, request: auth_pb2.RegisterRequest,
                       context: grpc.aio.ServicerContext) -> auth_pb2.RegisterResponse:
        made = await credentials.register(
            self._deps, request.email, request.password, request.name, request.currency,
            current_call_headers().client_address(context.peer() or ""),
        )
        return auth_pb2.RegisterResponse(user_id=made.user_id, account_id=made.account_id)

    async def Login(self, request: auth_pb2.LoginRequest,
                    context: grpc.aio.ServicerContext) -> auth_pb2.LoginResponse:
        headers = current_call_headers()
        session = await credentials.login(self._deps, LoginRequest(
            request.email, request.password, headers.client_address(context.peer() or ""),
            headers.user_agent, request.device_token,
        ))
        return auth_pb2.LoginResponse(token=session.token, user_id=session.user_id,
                                      session_id=session.session_id,
                                      expires_at=_timestamp(session.expires_at),
                                      device_token=session.device_token)

    async def Logout(self, request: auth_pb2.LogoutRequest,
                     context: grpc.aio.ServicerContext) -> auth_pb2.LogoutResponse:
        await session_management.logout(self._deps, current_caller())
        return auth_pb2.LogoutResponse()

    async def ChangePassword(self, request: auth_pb2.ChangePasswordRequest,
                             context: grpc.aio.ServicerContext
                             ) -> auth_pb2.ChangePasswordResponse:
        revoked = await credentials.change_password(
            self._deps, current_caller(), request.current_password, request.new_password,
            current_call_headers().client_address(context.peer() or ""),
        )
        return auth_pb2.ChangePasswordResponse(revoked_sessions=revoked)

    async def ListSessions(self, request: auth_pb2.ListSessionsRequest,
                           context: grpc.aio.ServicerContext) -> auth_pb2.ListSessionsResponse:
        caller = current_caller()
        sessions = await session_management.list_sessions(self._deps, caller)
        return auth_pb2.ListSessionsResponse(
            sessions=[_session_proto(s, caller.session_id) for s in sessions]
        )

    async def RevokeSession(self, request: auth_pb2.RevokeSessionRequest,
                            context: grpc.aio.ServicerContext) -> auth_pb2.RevokeSessionResponse:
        await session_management.revoke_session(self._deps, current_caller(), request.session_id)
        return auth_pb2.RevokeSessionResponse()

    async def RevokeAllSessions(self, request: auth_pb2.RevokeAllSessionsRequest,
                                context: grpc.aio.ServicerContext
                                ) -> auth_pb2.RevokeAllSessionsResponse:
        revoked = await credentials.revoke_all_sessions(
            self._deps, current_caller(), request.password, request.keep_current,
            current_call_headers().client_address(context.peer() or ""),
        )
        return auth_pb2.RevokeAllSessionsResponse(revoked_sessions=revoked)

    async def ValidateSession(self, request: auth_pb2.ValidateSessionRequest,
                              context: grpc.aio.ServicerContext
                              ) -> auth_pb2.ValidateSessionResponse:
        # The token to check is the request's; a caller may send it as metadata instead.
        token = request.token or current_call_headers().bearer_token() or ""
        checked = await session_management.validate_session(self._deps, token)
        return auth_pb2.ValidateSessionResponse(
            user_id=checked.caller.user_id, session_id=checked.caller.session_id,
            expires_at=_timestamp(checked.expires_at),
        )
