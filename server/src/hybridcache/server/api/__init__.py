"""The gRPC surface: what a caller meets. The gate (authentication, limits, lanes), request
validation, the handlers (unary RPCs, WatchChanges, ListSnapshot), the error mapping and the
registration on a `grpc.server`. Depends inward on `core` and `hub`; nothing in `core`,
`events` or `wrapper` imports it.
"""
