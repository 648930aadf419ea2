"""The batch path: `batch_submit`, `batch_status`, `batch_results` on the Message Batches API.

- `build`: pure request building, estimates and the split into API batches.
- `service`: submit (persist everything, with the budget hold, before any API call).
- `collect`: the background poller/collector entered by the server's lifespan.
- `views`: status and results (paged or written to a file).
All SQL is in `offload.infra.ledger.batches`.
"""

from offload.services.batches.build import SubmitArgs
from offload.services.batches.collect import collector, run_once
from offload.services.batches.service import submit
from offload.services.batches.views import results, status

__all__ = ["SubmitArgs", "collector", "results", "run_once", "status", "submit"]
