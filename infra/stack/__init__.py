"""The local scale-out stack, started by the project's own files: PostgreSQL (``postgres``) and an MLflow
tracking server (``mlflow_server``). Opt-in: the embedded SQLite defaults need none of it."""
