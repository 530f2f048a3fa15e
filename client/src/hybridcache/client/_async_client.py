"""The asyncio client (grpc.aio)."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from hybridcache.client._async_watch import AsyncWatchStream
from hybridcache.client._channel import Target, create_aio_channel
from hybridcache.client._client import watch_request
from hybridcache.client._config import ClientConfig, call_metadata
from hybridcache.client._trace_context import with_trace_context
from hybridcache.client._watch import ProgressCallback, ResyncCallback
from hybridcache.client.errors import from_rpc_error
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc

_R = TypeVar("_R")


class AsyncHybridCacheClient:
    """The asyncio twin of `HybridCacheClient`: same methods, awaited.

    Create it inside the event loop that uses it (grpc.aio channels belong to one loop):

        async with AsyncHybridCacheClient("localhost:50051") as client:
            status = await client.get_user_status("acme", "user-1")
    """

    def __init__(self, target: Target, config: ClientConfig | None = None) -> None:
        """`target`: as for `HybridCacheClient`."""
        self.config = config or ClientConfig()
        self._channel = create_aio_channel(target, self.config)
        self._stub = pb_grpc.HybridCacheStub(self._channel)
        self._metadata = call_metadata(self.config)
        self._streams: weakref.WeakSet[AsyncWatchStream] = weakref.WeakSet()

    async def _call(self, method: Callable[..., Awaitable[_R]], request: Any, timeout: float | None) -> _R:
        try:
            return await method(
                request,
                timeout=self.config.default_timeout if timeout is None else timeout,
                metadata=with_trace_context(self._metadata),
                wait_for_ready=self.config.wait_for_ready,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def get_credit_cost(
        self, tenant_id: str, operation_code: str, *, timeout: float | None = None
    ) -> pb.GetCreditCostResponse:
        """What one operation costs (`.credit_cost.cost.value` is a decimal string)."""
        request = pb.GetCreditCostRequest(tenant_id=tenant_id, operation_code=operation_code)
        return await self._call(self._stub.GetCreditCost, request, timeout)

    async def batch_get_credit_costs(
        self, tenant_id: str, operation_codes: Iterable[str], *, timeout: float | None = None
    ) -> pb.BatchGetCreditCostsResponse:
        """The costs of up to 1,000 operations; unknown ones are listed as missing."""
        request = pb.BatchGetCreditCostsRequest(tenant_id=tenant_id, operation_codes=list(operation_codes))
        return await self._call(self._stub.BatchGetCreditCosts, request, timeout)

    async def check_permission(
        self, tenant_id: str, user_id: str, permission: str, *, timeout: float | None = None
    ) -> pb.CheckPermissionResponse:
        """Whether the user may perform `permission` (`.allowed`), and why (`.reason`)."""
        request = pb.CheckPermissionRequest(tenant_id=tenant_id, user_id=user_id, permission=permission)
        return await self._call(self._stub.CheckPermission, request, timeout)

    async def get_user_status(
        self, tenant_id: str, user_id: str, *, timeout: float | None = None
    ) -> pb.GetUserStatusResponse:
        """Whether the user is active, and their roles."""
        request = pb.GetUserStatusRequest(tenant_id=tenant_id, user_id=user_id)
        return await self._call(self._stub.GetUserStatus, request, timeout)

    async def get_feature_flag(
        self, tenant_id: str, flag_key: str, *, timeout: float | None = None
    ) -> pb.GetFeatureFlagResponse:
        """One feature flag / active configuration value."""
        request = pb.GetFeatureFlagRequest(tenant_id=tenant_id, flag_key=flag_key)
        return await self._call(self._stub.GetFeatureFlag, request, timeout)

    async def get_user_profile(
        self, tenant_id: str, user_id: str, *, timeout: float | None = None
    ) -> pb.GetUserProfileResponse:
        """A user's profile (reference data; PII: do not log it)."""
        request = pb.GetUserProfileRequest(tenant_id=tenant_id, user_id=user_id)
        return await self._call(self._stub.GetUserProfile, request, timeout)

    async def get_org_unit(
        self, tenant_id: str, org_unit_id: str, *, timeout: float | None = None
    ) -> pb.GetOrgUnitResponse:
        """An org unit with its ancestors (parent first) and direct children."""
        request = pb.GetOrgUnitRequest(tenant_id=tenant_id, org_unit_id=org_unit_id)
        return await self._call(self._stub.GetOrgUnit, request, timeout)

    async def get_cache_stats(self, *, timeout: float | None = None) -> pb.GetCacheStatsResponse:
        """The server's cache counters per kind."""
        return await self._call(self._stub.GetCacheStats, pb.GetCacheStatsRequest(), timeout)

    def watch(
        self,
        *,
        tenant_ids: Iterable[str] = (),
        kinds: Iterable[pb.Kind.ValueType] = (),
        key_prefix: str = "",
        resume_token: str | None = None,
        on_resync: ResyncCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> AsyncWatchStream:
        """As `HybridCacheClient.watch`, for `async for`; callbacks may be coroutines."""
        stream = AsyncWatchStream(
            lambda request: self._stub.WatchChanges(request, metadata=with_trace_context(self._metadata)),
            watch_request(tenant_ids, kinds, key_prefix),
            config=self.config.watch,
            resume_token=resume_token,
            on_resync=on_resync,
            on_progress=on_progress,
        )
        self._streams.add(stream)
        return stream

    async def close(self) -> None:
        """Close the watch streams and the channel; calls still open are cancelled."""
        for stream in list(self._streams):
            await stream.aclose()
        await self._channel.close()

    async def __aenter__(self) -> AsyncHybridCacheClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
