"""Gradio apps for the field (audio) and the lab (slides); they call the same functions as the CLIs."""
