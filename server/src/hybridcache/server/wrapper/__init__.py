"""The Wrapper adapter: the only code that speaks the Wrapper's HTTP API and JSON mapping.

`client.WrapperClient` is the core's `WrapperSource` port made real (URLs, circuit breakers,
retries, a Wrapper's own field mapping); `check` is `hybridcache wrapper-check`. The core and
the change path never import it: `app.py` hands them a client.
"""
