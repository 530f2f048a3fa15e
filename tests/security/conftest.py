"""The security tests share the observability test's logged server (one copy of the canaries)."""

from tests.integration.test_observability import logged_server  # noqa: F401
