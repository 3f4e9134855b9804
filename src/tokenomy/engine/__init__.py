"""tokenomy.engine: ONE model of an LLM serving engine, shared by the fleet simulator (virtual
time) and the emulator (real or scaled time), in the shape of Vidur's split:

- `request.py`   entities: the per-request state (struct of lists, indexed by request id)
- `blocks.py`    the KV block manager's prefix cache (hashed blocks, ref counts, LRU eviction)
- `scheduler.py` the continuous-batching scheduler of one replica (chunked prefill, KV policy)
- `predictor.py` the step-time source (tokenomy.perf's StepModel behind one call)
- `affinity.py`  prefix-affinity routing across replicas (used by the simulator and the gateway)

So a plan (simulator) and a digital twin (emulator) cannot disagree on a schedule.
"""

from tokenomy.engine.blocks import PrefixCache, chain_block_hashes
from tokenomy.engine.predictor import StepPredictor
from tokenomy.engine.request import RequestTable
from tokenomy.engine.scheduler import ReplicaScheduler, SchedulerConfig, StepRecord

__all__ = ["PrefixCache", "ReplicaScheduler", "RequestTable", "SchedulerConfig", "StepPredictor", "StepRecord",
           "chain_block_hashes"]
