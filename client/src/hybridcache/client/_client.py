"""The synchronous client."""

from __future__ import annotations

import dataclasses
import random
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

import grpc

from hybridcache.client._channel import Target, create_channel, resolve_target
from hybridcache.client._config import ClientConfig, call_metadata
from hybridcache.client._trace_context import with_trace_context
from hybridcache.client._watch import ProgressCallback, ResyncCallback, WatchStream
from hybridcache.client.errors import from_rpc_error
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc

_R = TypeVar("_R")


def watch_request(
    tenant_ids: Iterable[str], kinds: Iterable[pb.Kind.ValueType], key_prefix: str
) -> pb.WatchChangesRequest:
    return pb.WatchChangesRequest(tenant_ids=list(tenant_ids), kinds=list(kinds), key_prefix=key_prefix)


class HybridCacheClient:
    """A blocking client of the hybridcache service; safe to share between threads.

    Every unary call gets the config's default deadline unless it passes `timeout`
    (seconds), carries the bearer token, is retried on UNAVAILABLE by gRPC's service
    config, and raises `HybridCacheError` subclasses. Answers are the generated response
    messages, each with its `provenance`.

        with HybridCacheClient("localhost:50051", ClientConfig(bearer_token=...)) as client:
            cost = client.get_credit_cost("acme", "crm.leads.create").credit_cost.cost.value
    """

    def __init__(self, target: Target, config: ClientConfig | None = None) -> None:
        """`target`: "host:port", "dns:///name:port", any gRPC target, or a list of
        "ip:port" addresses (balanced round_robin)."""
        self.config = config or ClientConfig()
        self._target = target
        self._channel = create_channel(target, self.config)
        self._stub = pb_grpc.HybridCacheStub(self._channel)
        self._metadata = call_metadata(self.config)
        # Open watch streams, closed with the client (a stream left running on a closed
        # channel would try to reconnect through it).
        self._streams: weakref.WeakSet[WatchStream] = weakref.WeakSet()

    def sticky(self) -> HybridCacheClient:
        """A client whose calls all go to ONE of this client's servers while it lives (gRPC
        pick_first over the same addresses, in a random order so that many consumers
        spread), failing over to the next when it goes. What a snapshot + watch consumer
        needs when the servers' resume tokens are bound to one process (pub/sub mode): with
        round_robin, ListSnapshot and the WatchChanges from its token go to two different
        replicas. `self` when there is only one address or the policy is already pick_first.
        Close it yourself (it has its own channel)."""
        _, multi = resolve_target(self._target)
        if not multi or self.config.load_balancing_policy == "pick_first":
            return self
        target: Target = self._target
        if not isinstance(target, str):
            target = random.sample(list(target), len(target))
        return HybridCacheClient(target, dataclasses.replace(self.config, load_balancing_policy="pick_first"))

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None, answer: type[_R]) -> _R:
        # `answer` only binds _R: grpc ships no type hints, so the stub's call returns Any.
        try:
            return cast(
                _R,
                method(
                    request,
                    timeout=self.config.default_timeout if timeout is None else timeout,
                    metadata=with_trace_context(self._metadata),
                    wait_for_ready=self.config.wait_for_ready,
                ),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def get_credit_cost(
        self, tenant_id: str, operation_code: str, *, timeout: float | None = None
    ) -> pb.GetCreditCostResponse:
        """What one operation costs (`.credit_cost.cost.value` is a decimal string)."""
        request = pb.GetCreditCostRequest(tenant_id=tenant_id, operation_code=operation_code)
        return self._call(self._stub.GetCreditCost, request, timeout, pb.GetCreditCostResponse)

    def batch_get_credit_costs(
        self, tenant_id: str, operation_codes: Iterable[str], *, timeout: float | None = None
    ) -> pb.BatchGetCreditCostsResponse:
        """The costs of up to 1,000 operations; unknown ones are listed as missing."""
        request = pb.BatchGetCreditCostsRequest(tenant_id=tenant_id, operation_codes=list(operation_codes))
        return self._call(self._stub.BatchGetCreditCosts, request, timeout, pb.BatchGetCreditCostsResponse)

    def check_permission(
        self, tenant_id: str, user_id: str, permission: str, *, timeout: float | None = None
    ) -> pb.CheckPermissionResponse:
        """Whether the user may perform `permission` (`.allowed`), and why (`.reason`)."""
        request = pb.CheckPermissionRequest(tenant_id=tenant_id, user_id=user_id, permission=permission)
        return self._call(self._stub.CheckPermission, request, timeout, pb.CheckPermissionResponse)

    def get_user_status(
        self, tenant_id: str, user_id: str, *, timeout: float | None = None
    ) -> pb.GetUserStatusResponse:
        """Whether the user is active, and their roles."""
        request = pb.GetUserStatusRequest(tenant_id=tenant_id, user_id=user_id)
        return self._call(self._stub.GetUserStatus, request, timeout, pb.GetUserStatusResponse)

    def get_feature_flag(
        self, tenant_id: str, flag_key: str, *, timeout: float | None = None
    ) -> pb.GetFeatureFlagResponse:
        """One feature flag / active configuration value."""
        request = pb.GetFeatureFlagRequest(tenant_id=tenant_id, flag_key=flag_key)
        return self._call(self._stub.GetFeatureFlag, request, timeout, pb.GetFeatureFlagResponse)

    def get_user_profile(
        self, tenant_id: str, user_id: str, *, timeout: float | None = None
    ) -> pb.GetUserProfileResponse:
        """A user's profile (reference data; PII: do not log it)."""
        request = pb.GetUserProfileRequest(tenant_id=tenant_id, user_id=user_id)
        return self._call(self._stub.GetUserProfile, request, timeout, pb.GetUserProfileResponse)

    def get_org_unit(
        self, tenant_id: str, org_unit_id: str, *, timeout: float | None = None
    ) -> pb.GetOrgUnitResponse:
        """An org unit with its ancestors (parent first) and direct children."""
        request = pb.GetOrgUnitRequest(tenant_id=tenant_id, org_unit_id=org_unit_id)
        return self._call(self._stub.GetOrgUnit, request, timeout, pb.GetOrgUnitResponse)

    def get_cache_stats(self, *, timeout: float | None = None) -> pb.GetCacheStatsResponse:
        """The server's cache counters per kind."""
        return self._call(
            self._stub.GetCacheStats, pb.GetCacheStatsRequest(), timeout, pb.GetCacheStatsResponse
        )

    def list_snapshot(
        self,
        tenant_id: str,
        *,
        kinds: Iterable[pb.Kind.ValueType] = (),
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[pb.ListSnapshotResponse]:
        """A tenant's replicated kinds, page by page; the last page (`.last`) carries the
        `resume_token` to `watch()` from. `timeout` bounds the whole stream."""
        request = pb.ListSnapshotRequest(tenant_id=tenant_id, kinds=list(kinds), page_size=page_size)
        call = self._stub.ListSnapshot(
            request,
            timeout=self.config.default_timeout if timeout is None else timeout,
            metadata=self._metadata,
            wait_for_ready=self.config.wait_for_ready,
        )
        try:
            yield from call
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def watch(
        self,
        *,
        tenant_ids: Iterable[str] = (),
        kinds: Iterable[pb.Kind.ValueType] = (),
        key_prefix: str = "",
        resume_token: str | None = None,
        on_resync: ResyncCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> WatchStream:
        """Stream `ChangeEvent`s, reconnecting and resuming by itself.

        Empty filters mean "all" (every tenant the caller may read, every kind, every key).
        `resume_token`: continue after a token saved from an earlier stream's
        `resume_token`. `on_resync(reason)` is called when the server cannot replay what
        was missed: reload your state; the stream then goes on with live events.
        `on_progress(progress)` sees the heartbeats. The stream has no deadline; a stream
        silent for `config.watch.idle_timeout` is reopened. Close it (or use `with`).
        """
        stream = WatchStream(
            lambda request: self._stub.WatchChanges(request, metadata=with_trace_context(self._metadata)),
            watch_request(tenant_ids, kinds, key_prefix),
            config=self.config.watch,
            resume_token=resume_token,
            on_resync=on_resync,
            on_progress=on_progress,
        )
        self._streams.add(stream)
        return stream

    def close(self) -> None:
        """Close the watch streams and the channel; calls still open are cancelled."""
        for stream in list(self._streams):
            stream.close()
        self._channel.close()

    def __enter__(self) -> HybridCacheClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
