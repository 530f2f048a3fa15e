"""The dev stack (`hybridcache dev`, scripts/dev): Redis + the development Wrapper + the server.

devstack            runs the three on fixed ports and prints ready-to-paste commands
devstack_leftovers  what an earlier dev stack left behind (lock, pids, ports, SQLite)
lifeline            children that die with their parent, however it dies
redis_process       the one Redis launcher (dev stack, tests, benchmarks)
"""
