"""Reading slides and ground truth, writing pyramidal TIFFs and annotations."""
