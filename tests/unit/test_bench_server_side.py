"""The bench's server-side figures (pure parts): CPU of a process and everything below it,
replicas summed by component, perf's report read, and the hot account's share of transfers."""

from __future__ import annotations

import random

from bench.cpu import by_role, group_jiffies
from bench.pgprofile import summarize_perf_report
from bench.workload import HOT_USER, transfer_parties
from bench.zipf import ZipfSampler


def test_a_group_counts_its_roots_and_every_descendant() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 30: 0}
    jiffies = {1: 5, 10: 100, 11: 7, 12: 3, 20: 50, 30: 1000}
    assert group_jiffies([10], parents, jiffies) == 110  # the postmaster and its backends
    assert group_jiffies([10, 20], parents, jiffies) == 160
    assert group_jiffies([99], parents, jiffies) == 0


def test_replicas_are_summed_by_component() -> None:
    assert by_role({"transfer-0": 1.0, "transfer-1": 2.0, "postgres": 3.0,
                    "gateway (Envoy)": 0.5, "outbox-relay-0": 0.1}) == {
        "transfer": 3.0, "postgres": 3.0, "gateway (Envoy)": 0.5, "outbox-relay": 0.1}


def test_perf_report_lines_become_shares_by_function() -> None:
    text = """# Samples: 4K of event 'cpu-clock:pppH'
# Overhead  Command   Shared Object       Symbol
    12.50%  postgres  postgres            [.] hash_search_with_hash_value
     8.00%  postgres  [kernel.kallsyms]   [k] finish_task_switch
     3.25%  postgres  libc.so.6           [.] __memmove_avx_unaligned_erms
"""
    summary = summarize_perf_report(text)
    assert summary.samples_note.startswith("Samples: 4K")
    assert summary.top[0] == (0.125, "hash_search_with_hash_value (postgres)")
    assert summary.top[2] == (0.0325, "__memmove_avx_unaligned_erms (postgres, libc.so.6)")


def test_the_hot_share_of_transfers_touches_the_hot_account_both_ways() -> None:
    rng, users = random.Random(1), ZipfSampler(500, 1.0)
    pairs = [transfer_parties(rng, users, 0.7) for _ in range(20_000)]
    hot = [(a, b) for a, b in pairs if HOT_USER in (a, b)]
    assert all(a != b for a, b in pairs)
    assert 0.68 < len(hot) / len(pairs) < 0.72
    debits = sum(1 for a, _ in hot if a == HOT_USER)
    assert 0.45 < debits / len(hot) < 0.55
