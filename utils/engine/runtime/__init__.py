"""Where and how the computation runs: distributed.py (one process, torchrun's or srun's process group; the
--device vocabulary; gathering), precision.py (--precision), allocator.py (--retain_freed_memory),
determinism.py (--deterministic), log.py (log.txt, metrics.jsonl, JSON files), sharded_encoding.py (each rank
encodes its shard of an evaluation view, gathered in order, checked finite: EvaluationError)."""
