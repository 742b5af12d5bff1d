"""Sequence sharding: inputs longer than one device holds, across processes, GPUs or machines, with the
single-process result (docs/sharding.md).

``sharded_attention`` is the attention primitive; ``shard_encoder`` rewrites a built encoder to use it;
``encode_on_devices`` runs it on N local ranks (``launch``); ``on_devices(encoder, N)`` gives an
``Encoder`` whose ``encode``/``embed_spans`` do (what ``longdoc ask --devices N`` needs);
``encode_sequential`` is the one-device mode (shards one after another, the rest in host memory).
"""
from longdoc.shard.attention import ShardLayout, ShardSpec, even_bounds, halo_pieces, sharded_attention
from longdoc.shard.encoder import (ShardedEncoder, encode_on_devices, encode_sequential, encode_shard,
                                   encoder_on_devices, estimate_bytes, on_devices, resolve_devices,
                                   shard_encoder, unshard_encoder)
from longdoc.shard.launch import launch

__all__ = ["ShardLayout", "ShardSpec", "even_bounds", "halo_pieces", "sharded_attention", "ShardedEncoder",
           "shard_encoder", "unshard_encoder", "encode_sequential", "encode_shard", "encode_on_devices",
           "encoder_on_devices", "on_devices", "resolve_devices", "estimate_bytes", "launch"]
