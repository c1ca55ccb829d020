"""spark-pipeline: build vLLM from source for NVIDIA DGX Spark and run it on one Spark or a cluster."""

__version__ = "0.1.0"
