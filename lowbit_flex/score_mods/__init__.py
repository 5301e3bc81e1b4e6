"""FlexAttention ``score_mod`` and ``block_mask`` factories (one small factory per file)."""

__all__: list[str] = []
