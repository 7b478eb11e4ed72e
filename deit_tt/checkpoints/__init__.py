"""DeiT checkpoints: Hugging Face hub ids, local folders, the built-in models, random weights, and their class names."""
