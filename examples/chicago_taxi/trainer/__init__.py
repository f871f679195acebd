"""A small scikit-learn trainer for the taxi dataset, run the way Vertex AI runs a container."""
