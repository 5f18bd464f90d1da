"""The anchor search: its space, sampler, Optuna storages (journal file, database), dead-worker heartbeat."""
