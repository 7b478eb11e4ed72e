"""Looking inside the model: PCC against Hugging Face, numerics ladders, attention maps, the notebooks' widget."""
