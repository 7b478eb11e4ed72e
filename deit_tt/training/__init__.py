"""Training a distilled DeiT-tiny on the generated scenes (hard distillation from a CNN teacher), and its held-out checks."""
