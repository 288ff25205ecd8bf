"""What people run: the Gradio app, the `pneumo` command line, and deploying to a Hugging Face Space."""
