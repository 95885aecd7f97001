"""HTTP API: FastAPI app factory, dependencies, response models and routes."""
