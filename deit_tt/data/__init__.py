"""Images in, pixel values out: decoding, DeiT's preprocessing, ImageNet and class folders, the generated scenes."""
