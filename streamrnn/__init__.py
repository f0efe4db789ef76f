"""streamrnn: forecast every metric series from Kafka with a stateful GRU and alert on anomalies.

The fused kernel's matrix products call BLAS (OpenBLAS, through scipy) from numba's
threads, one product per chunk of series. BLAS's own thread pool on top would oversubscribe
the cores, and is slower at these sizes anyway (0.62 against 0.27 us a row for a
1,000 x 64 x 192 product), so it is limited to one thread here, before numpy or scipy load
it, unless the environment says otherwise.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
