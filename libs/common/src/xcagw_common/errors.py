"""gRPC error helpers: a status code plus a machine-readable reason (google.rpc.ErrorInfo)."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "xcagw"


def rich_status(
    code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str] | None = None
) -> grpc.Status:
    """Build a status whose details carry ErrorInfo(reason, domain, metadata)."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str] | None = None,
) -> NoReturn:
    """Abort the RPC with a rich status. Messages must never hold secrets or NHS numbers."""
    await context.abort_with_status(rich_status(code, message, reason, metadata))  # type: ignore[attr-defined]
    raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo attached by `abort`, if any (client side)."""
    trailing: Any = error.trailing_metadata() or ()
    for key, value in trailing:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info
    return None


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason, or "" when the server attached none."""
    info = error_info(error)
    return info.reason if info is not None else ""
