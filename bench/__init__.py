"""`make bench` (python -m bench): the design's before/after table, measured on this machine.

    config       what one run does (durations, rates, users), default and --quick
    zipf         skewed choice of users (a few hot accounts, a long tail)
    histogram    mergeable latency histograms and percentiles
    workload     the design's operation mix and open-loop arrival times
    population   bench users, accounts, money and sessions in PostgreSQL
    drivers      one request of each operation over gRPC or HTTP (the Envoy edge)
    wrk          the closed-loop maxima through the edge, driven by wrk
    loadgen      the load generator processes (open loop and closed loop)
    observe      snapshots of the services' /metrics, Redis INFO and PostgreSQL statistics
    baseline     pgbench and redis-benchmark on the same servers
    stack        start the stack or attach to a running one; restart services cache off/on
    runner       the phases of one run, in order
    analysis     hit rates, database rates, maxima derived from the raw results
    goals        the target table and the latency goals (config) against the measured figures
    report       the Markdown report (tables formatted by `tables`)
    profiling    py-spy samples of the services during the maxima, summarised
    model        the run's results as plain data
    chart        the PNG: latency over time, hit rate, database QPS, cache off vs on
    promql       metric names used by PromQL expressions (the dashboard test)

`bench/account_cache.py` and `bench/transfer_throughput.py` are the micro-benchmarks
of the account cache and the transfer ledger; they run on their own.
"""
