"""A1111-compatible REST API (FastAPI). Never imports gradio."""
