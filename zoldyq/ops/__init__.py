"""Operations: health, metrics, logs and snapshots, read through the broker API."""
