"""`make chaos` / `python -m chaos`: a seeded fault-injection run against a real local stack.

The stack is devstack's (PostgreSQL, a six-node Redis Cluster, two replicas of each service, the
outbox relay, Envoy), every server on a free port, crashed replicas restarted by the devstack
supervisor as `make run` does. A workload of users goes through Envoy over HTTPS: transfers
(retried under their idempotency keys), reads from the writer's session and from other sessions,
logins and logouts. A schedule drawn from the seed injects faults one after the other: kill -9 and
SIGSTOP of a service replica, kill -9 of a Redis master that comes back or stays down, SIGSTOP of
every Redis node, a PostgreSQL restart, the pub/sub connections dropped. The same seed gives the
same faults, targets and lengths (the timing of the system under them differs from run to run).

Checked during and after the run (`invariants.py`): money is conserved; every acknowledged
transfer is in the ledger exactly once; a key retried never posts twice, and every key posts once
after its retries; a writer never reads a balance older than its acknowledged transfer; every
cached balance is PostgreSQL's within 2 s after each fault ends; revoked sessions stay revoked.
The report (`results/chaos-<time>-seed<N>/report.md`) gives availability per fault window, the
longest staleness a non-writer saw, the longest degraded span per fault, and the seed.

    profiles.py   the short (about 2 minutes, in `make test`) and long runs
    schedule.py   the faults a seed gives
    stack.py      the stack under test and the faults done to it
    workload.py   the users, what they did and saw
    observer.py   PostgreSQL's versions over time, the cache against them
    invariants.py the checks
    report.py     report.md
    run.py        one run, start to end
"""
