"""Video files to snippet features: listing the inputs, decoding into windows (PyAV), backbones (torchvision,
TorchScript), and the outputs an extraction writes and resumes from. Ray-free: the Ray Data pipeline is
raytal/distributed/extract_pipeline.py."""
