"""The Gradio studio. Only this package imports gradio, and it never imports torch or diffusers."""
