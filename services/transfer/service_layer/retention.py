"""What the transfer service's retention job prunes, and after how long (docs/database.md).

- Confirmed outbox rows made more than `outbox_retention_s` ago (a row is confirmed seconds
  after it was made). Unconfirmed rows are never pruned: the relay still owes their events. The
  account service's catch-up reads the last few minutes of the outbox, far inside the
  retention.
- Stored rejections older than `idempotency_retention_s`: a retry with such a key is a new
  request again (docs/transfers.md, Idempotency). Completed transfers keep their key for good.
"""

from __future__ import annotations

from services.transfer.service_layer.ports import TransferRetentionStore
from shared.retention import PruneRule


def transfer_retention_rules(store: TransferRetentionStore, *, outbox_retention_s: float,
                             rejection_retention_s: float) -> list[PruneRule]:
    async def outbox(limit: int) -> int:
        return await store.delete_confirmed_outbox(outbox_retention_s, limit)

    async def rejections(limit: int) -> int:
        return await store.delete_rejections(rejection_retention_s, limit)

    return [PruneRule("outbox", outbox), PruneRule("transfer_rejections", rejections)]
