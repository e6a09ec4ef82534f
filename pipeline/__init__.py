"""ssvd pipeline: captions -> dialogues (-> speech -> tokens), stage runner, engines, shard IO.

Modules are small and named for what they do; the shared types live in `pipeline.core.types`.
"""
